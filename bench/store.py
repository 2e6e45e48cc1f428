"""The clip store against extract's raw shards (issue 32): bytes, write rate, read + decode rate per core, the
loader's batch time, streaming's first batch, and the training loop on each.

    python bench/store.py [--data data/trainset] [--steps 200] [--skip-train]

Writes a store of --data (JPEG q90, 16 MB chunks) to a temporary folder and prints a markdown table; results also
in reports/store.json. Rates per core are measured with one thread (`OMP_NUM_THREADS=1` is set here); the training
loop with the machine's threads, as `clpau pretrain` runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: per-core rates

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rate(fn, n: int, repeat: int = 3) -> float:
    """Best of `repeat`: n / seconds of fn()."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/trainset", help="extract output (or training set) folder")
    ap.add_argument("--steps", type=int, default=200, help="training steps per loop measurement")
    ap.add_argument("--skip-train", action="store_true", help="no training-loop measurement")
    args = ap.parse_args()

    import torch

    from clpau.data.clips import load_clips
    from clpau.data.datasets import ClipDataset
    from clpau.data.jpeg_store import JpegStore
    from clpau.data.store import write_store

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="clpau-store-bench-"))
    out: dict = {}
    try:
        store = tmp / "store"
        for workers in (1, 2):
            shutil.rmtree(store, ignore_errors=True)
            s = write_store([args.data], store, workers=workers, progress=False)
            out[f"write_fps_{workers}_workers"] = s["frames"] / s["seconds"]
        out |= {k: s[k] for k in ("frames", "bytes_per_frame", "raw_bytes_per_frame", "chunks", "quality")}

        # read + decode, per frame: the store (LitData item + libjpeg-turbo) against the raw memory map
        clips = load_clips([args.data], span=1)
        shards = [np.load(p, mmap_mode="r") for p in dict.fromkeys(clips["shard_path"])]
        rows = np.concatenate([np.stack([np.full(len(a), k), np.arange(len(a))], 1) for k, a in enumerate(shards)])
        pick = rows[np.random.default_rng(0).permutation(len(rows))[:3000]]
        jpeg = JpegStore(store)
        flat = np.cumsum([0] + [len(a) for a in shards])
        sink = np.empty((jpeg.side, jpeg.side, 3), np.uint8)

        def raw_read():
            for k, r in pick:
                sink[...] = shards[k][r]

        def store_read():
            for k, r in pick:
                jpeg.items[int(flat[k] + r)]

        def store_decode():
            for k, r in pick:
                jpeg.frames(int(flat[k] + r), 1)

        out["raw_read_fps"] = rate(raw_read, len(pick))
        out["store_item_read_fps"] = rate(store_read, len(pick))
        out["store_read_decode_fps"] = rate(store_decode, len(pick))

        # the loader's batch at the CPU default (16 clips of 8 frames 4 apart, 64 px, two views)
        def batch_ms(root) -> float:
            ds = ClipDataset([root], clip_len=8, stride=4, size=64, frame_jitter=0.03)
            order = np.random.default_rng(1).permutation(len(ds))
            batches = [order[b * 16:(b + 1) * 16].tolist() for b in range(30)]
            ds.__getitems__(batches[0])
            return 1000 / rate(lambda: [ds.__getitems__(b) for b in batches], len(batches))

        out["batch_ms_raw"] = batch_ms(args.data)
        out["batch_ms_store"] = batch_ms(store)

        # the trainer's decoder (`decode_on: trainer`): a GPU profile batch (64 clips x 8 frames) in one call
        from clpau.data.jpeg_store import decode_batch

        blobs = [jpeg.items[int(flat[k] + r)]["jpeg"] for k, r in pick[:512]]
        packed = np.frombuffer(b"".join(blobs), np.uint8).copy()
        lengths = np.array([len(b) for b in blobs])
        for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
            dev = torch.device(device)

            def decode(dev=dev):
                decode_batch(packed, lengths, dev)
                if dev.type == "cuda":
                    torch.cuda.synchronize()

            out[f"trainer_decode_fps_{device}"] = rate(decode, len(blobs), repeat=5)

        # streaming: the first batch of a store read as an object store (LitData `local:`), from an empty cache
        cache = tmp / "cache"
        t = time.perf_counter()
        ds = ClipDataset([f"local:{store}"], clip_len=8, stride=4, size=64, cache_dir=cache)
        ds.__getitems__(np.random.default_rng(2).permutation(len(ds))[:16].tolist())
        out["stream_first_batch_s"] = time.perf_counter() - t
        out["stream_chunks_fetched"] = len(list(cache.rglob("chunk-*.bin")))

        if not args.skip_train:
            for name, data in (("raw", args.data), ("store", str(store))):
                live = tmp / f"live_{name}"
                code = ("import sys; from clpau.config import PretrainParams; from clpau.train.pretrain import run_pretrain; "
                        f"run_pretrain(PretrainParams(data=[{data!r}], max_steps={args.steps}, "
                        f"log_every={args.steps // 2}, out_dir={str(tmp / ('m_' + name))!r}, "
                        f"live_dir={str(live)!r}), progress=False, log=lambda *a: None)")
                env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the machine's threads
                subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
                m = json.loads((live / "metrics.json").read_text())
                out[f"train_img_per_s_{name}"] = m["img_per_s"]  # the second half of the run (warm)
                out[f"train_loader_wait_{name}"] = m["loader_wait"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"| store of {args.data} | {out['frames']} frames, {out['chunks']} chunks |")
    print("|---|---|")
    print(f"| bytes a frame (112 px) | raw {out['raw_bytes_per_frame']}, JPEG q{out['quality']} "
          f"{out['bytes_per_frame']:.0f} ({out['raw_bytes_per_frame'] / out['bytes_per_frame']:.1f}x fewer) |")
    print(f"| write (`clpau store`), frames/s | 1 process {out['write_fps_1_workers']:.0f}, 2 processes "
          f"{out['write_fps_2_workers']:.0f} |")
    print(f"| random read, frames/s per core | raw memory map {out['raw_read_fps']:.0f}; store item "
          f"{out['store_item_read_fps']:.0f}, item + decode {out['store_read_decode_fps']:.0f} |")
    print(f"| loader batch (16 clips x 8 frames, 64 px, 1 thread), ms | raw {out['batch_ms_raw']:.1f}, store "
          f"{out['batch_ms_store']:.1f} |")
    print("| decoded on the trainer (`decode_on: trainer`, 512 frames a call), frames/s | "
          + ", ".join(f"{k.rsplit('_', 1)[1]} {v:.0f}" for k, v in out.items() if k.startswith("trainer_decode"))
          + " (cpu: one core, libjpeg-turbo; cuda: nvjpeg) |")
    print(f"| streamed (`local:`), first batch from an empty cache | {out['stream_first_batch_s']:.2f} s, "
          f"{out['stream_chunks_fetched']} of {out['chunks']} chunks fetched |")
    if not args.skip_train:
        print(f"| training loop ({args.steps} steps, second half), img/s (loader_wait) | raw "
              f"{out['train_img_per_s_raw']:.0f} ({out['train_loader_wait_raw']:.3f}), store "
              f"{out['train_img_per_s_store']:.0f} ({out['train_loader_wait_store']:.3f}) |")
    report = ROOT / "reports" / "store.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
