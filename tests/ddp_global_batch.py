"""One process of a DDP group (gloo): the shipped `tcl` (online keys) on its share of one global batch of 4 clips,
the loss and the encoder's gradient averaged over the processes as DDP averages them. Writes them to OUT (torch
tensors). Run by tests/test_pretrain.py as `python ddp_global_batch.py OUT [no-gather]` with RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT set (WORLD_SIZE 1: the whole batch in one process). `no-gather`: negatives from the
process's own clips only, as before the gather — the check that the test can tell the two apart."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

import clpau.methods.tcl as tcl_module
from clpau.config import load_params
from clpau.train.pretrain import build_method

out = sys.argv[1]
if "no-gather" in sys.argv:
    tcl_module.gather_with_grad = lambda t: t
dist.init_process_group("gloo", timeout=timedelta(seconds=120))
rank, world = dist.get_rank(), dist.get_world_size()
p = load_params(Path(__file__).resolve().parents[1] / "params.yaml").pretrain
torch.manual_seed(0)
method = build_method(p).double().eval()  # batch norm on its running statistics: the same for any split
g = torch.Generator().manual_seed(1)
view_q, view_k = torch.randn(2, 4, 4, 3, 32, 32, generator=g, dtype=torch.float64)
clips = torch.arange(4).tensor_split(world)[rank]  # this process's share of the global batch
batch = {"view_q": view_q[clips], "view_k": view_k[clips], "clip_id": clips, "identity": clips}
loss = method(batch)["loss"]
loss.backward()
grad = torch.cat([q.grad.flatten() for q in method.encoder.parameters() if q.grad is not None])
for t in (loss, grad):  # DDP's average over the processes
    dist.all_reduce(t.detach().requires_grad_(False), op=dist.ReduceOp.SUM)
torch.save({"loss": loss.detach() / world, "grad": grad / world}, out) if rank == 0 else None
dist.destroy_process_group()
