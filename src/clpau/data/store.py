"""Stage `store`: extract output -> a compressed clip store that LitData streams to pretraining.

`extract` keeps aligned crops as raw uint8 frames (37.6 KB a frame at 112 px), read by memory map from one local
disk. A store keeps each frame as a JPEG (quality 90: 9.9x fewer bytes than raw on the
default corpus' frames, 8.6-9.2x on the codec bench's; 37.7-39.9 dB PSNR; docs/performance.md)
in LitData's chunk files, which a training run reads from a local folder or streams from an object store
(`s3://bucket/store`), fetching a chunk the first time a batch needs it. `pretrain.data` names the store instead of
the extract folders; under DDP each process reads its own chunks (`pretrain.epoch_batches`).

A store folder:
    index.json, chunk-*.bin   LitData's: item k = {"jpeg": bytes} of frame row k, one shard's rows after another
    clips.parquet             the sources' clips, `shard` renamed shard-<k>, `store_row` = their first row's item
    landmarks.npy             (rows, 68, 2) float16 crop-space landmarks of every row (the motion margin reads them)
    store.json                what it holds: frames, bytes, JPEG quality, crop side, sources — written last

Written under a temporary name and renamed when whole: an interrupted run leaves nothing that looks like a store.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from clpau.core.fileio import atomic_dir
from clpau.data.clips import crop_landmarks, load_clips
from clpau.data.jpeg_store import is_store

STORE_VERSION = 1


def encode_shard(args: tuple[str, int]) -> list[bytes]:
    """Every row of one frame shard (rows, S0, S0, 3) uint8 as JPEG bytes (4:2:0 chroma, Pillow's default)."""
    from PIL import Image

    path, quality = args
    frames = np.load(path, mmap_mode="r")
    out = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(frame)).save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def write_store(roots: list[Path | str], out: Path | str, quality: int = 90, chunk_mb: float = 16,
                workers: int = 1, progress: bool = True, chunk_frames: int | None = None) -> dict:
    """Write the clips of the extract output folders `roots` (every row of every shard their clips name) as one
    store at `out`, in chunks of `chunk_mb` (or of `chunk_frames` frames each). Returns store.json's content and
    the seconds it took."""
    from litdata.streaming.writer import BinaryWriter
    from tqdm import tqdm

    if not 1 <= quality <= 100:
        raise ValueError(f"store.quality: {quality} is not a JPEG quality (1-100)")
    for root in roots:
        if is_store(root):
            raise ValueError(f"{root} is a store already: give the extract output folders it was written from")
    clips = load_clips(roots, span=1)
    shards = list(dict.fromkeys(clips["shard_path"]))
    sizes = [np.load(s, mmap_mode="r").shape for s in shards]
    if len({shape[1:] for shape in sizes}) != 1:
        raise ValueError(f"the shards of {', '.join(map(str, roots))} hold crops of different sizes "
                         f"({sorted({shape[1] for shape in sizes})}): extract them at one crop_size")
    first_row = dict(zip(shards, np.cumsum([0] + [n[0] for n in sizes[:-1]]).tolist(), strict=True))
    rows = sum(n[0] for n in sizes)
    t0 = time.perf_counter()
    jpeg_bytes = 0
    content = hashlib.blake2b(digest_size=8)
    with atomic_dir(out) as tmp, warnings.catch_warnings():
        # litdata warns each time a chunk fills ("An item was larger than the target chunk size"): not news
        warnings.filterwarnings("ignore", "An item was larger than the target chunk size", UserWarning)
        writer = BinaryWriter(str(tmp), **({"chunk_size": chunk_frames} if chunk_frames
                                           else {"chunk_bytes": int(chunk_mb * 2**20)}))
        bar = tqdm(total=rows, unit="frame", desc="store", disable=not progress)
        item = 0
        with get_context("spawn").Pool(workers) if workers > 1 else _Serial() as pool:
            for encoded in pool.imap(encode_shard, [(s, quality) for s in shards]):
                for jpeg in encoded:
                    writer.add_item(item, {"jpeg": jpeg})
                    jpeg_bytes += len(jpeg)
                    content.update(jpeg)
                    item += 1
                bar.update(len(encoded))
        bar.close()
        writer.done()
        writer.merge()
        # LitData stamps index.json with the time it was written; the frames' digest instead keeps a store
        # byte-identical when written again from the same crops (DVC sees no change; a streaming reader, which keys
        # its chunk cache by this field, still sees a rewritten store as new)
        index = json.loads((tmp / "index.json").read_text())
        index["updated_at"] = content.hexdigest()
        (tmp / "index.json").write_text(json.dumps(index, sort_keys=True))
        np.save(tmp / "landmarks.npy", np.concatenate([crop_landmarks(s) for s in shards]).astype(np.float16))
        table = clips.drop(columns=["shard_path", "store", "store_row"])
        number = {path: k for k, path in enumerate(shards)}  # relative shard names of two sources may coincide
        table["shard"] = [f"shard-{number[p]:06d}" for p in clips["shard_path"]]
        table["store_row"] = [first_row[p] + r for p, r in zip(clips["shard_path"], clips["start_row"], strict=True)]
        table.to_parquet(tmp / "clips.parquet", index=False)
        side = sizes[0][1]
        summary = {"version": STORE_VERSION, "frames": rows, "clips": len(table), "side": side, "codec": "jpeg",
                   "quality": quality, "jpeg_bytes": jpeg_bytes, "bytes_per_frame": round(jpeg_bytes / rows, 1),
                   "raw_bytes_per_frame": side * side * 3, "chunks": len(list(tmp.glob("chunk-*.bin"))),
                   "sources": [str(r) for r in roots]}
        (tmp / "store.json").write_text(json.dumps(summary, indent=2) + "\n")  # the same store, the same bytes
    return {**summary, "seconds": time.perf_counter() - t0}


class _Serial:
    """`Pool.imap` in this process (workers 1: a pool's start-up would cost more than it saves)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap(self, fn, items):
        return map(fn, items)
