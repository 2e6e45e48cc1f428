"""One process of a DDP group (gloo) reading a clip store for `epochs` epochs as `clpau pretrain` deals it out
(`epoch_loader` with the store's chunks): writes which clips it read in each epoch and which chunks it opened.
Run by tests/test_store.py as `python ddp_reader.py STORE OUT_JSON EPOCHS BATCH` with RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT set, as torchrun sets them."""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import torch.distributed as dist

from clpau.data.datasets import ClipDataset
from clpau.train.sampling import epoch_loader

store, out, epochs, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
dist.init_process_group("gloo", timeout=timedelta(seconds=120))
rank, world = dist.get_rank(), dist.get_world_size()
dataset = ClipDataset([store], clip_len=4, size=32, cache_dir=None)
chunks = dataset.chunks()
read = []
for epoch in range(epochs):
    loader = epoch_loader(dataset, batch, 0, seed=0, epoch=epoch, rank=rank, world_size=world, chunks=chunks)
    read.append([int(i) for b in loader for i in b["clip_id"]])
    dist.barrier()  # the processes step in lockstep, as DDP does
everyone = [None] * world
dist.all_gather_object(everyone, len(read[0]))
with open(out, "w") as f:
    json.dump({"rank": rank, "read": read, "chunks_read": sorted(dataset.jpeg_store(store).chunks_read),
               "batches": everyone, "clip_chunks": chunks.tolist()}, f)
dist.destroy_process_group()
