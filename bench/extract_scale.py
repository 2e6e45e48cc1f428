"""Extraction at scale (issue 32, goal 4): a long real video end to end, and a batch of real videos through the
ingest flow's Dask task runner over several worker processes on one machine.

    python bench/extract_scale.py [--minutes 5] [--pieces 4]

The long video is made from the real sample video (data/external/videos/WolfgangLanger_Pexels.mp4, 640 x 360,
25 fps): played forward, then backward, then mirrored, …, until --minutes, so every frame is a real face in real
motion and the tracker sees no cut. Measured, whole process (start of the workers and dlib's models included):
  1. `run_extract` on the long video with 1 and with every usable core's worker (it splits one video in time);
  2. the same frames as --pieces videos, each one Prefect task (`extract_video`, as the ingest flow runs them) on a
     local Dask cluster of as many single-threaded worker processes as usable cores (`flows.task_runner: dask`).
Prints frames/s and frames/s per core; writes reports/extract_scale.json.
"""

from __future__ import annotations

import os
import tempfile

# no telemetry (as the Makefile sets), and Prefect's database in a folder of its own: each Dask worker process,
# having no PREFECT_API_URL, starts a temporary API server of its own on it
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="clpau-bench-prefect-"))

import argparse
import json
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "flows"))


def sample_frames(path: Path) -> tuple[list[np.ndarray], int]:
    with av.open(str(path)) as c:
        fps = int(round(float(c.streams.video[0].average_rate)))
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)], fps


def write_video(path: Path, frames, fps: int) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"preset": "veryfast", "crf": "20"}
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def long_sequence(frames: list[np.ndarray], n: int) -> list[np.ndarray]:
    """n frames: forward, backward, mirrored forward, mirrored backward, … (no cut between the passes)."""
    passes = [frames, frames[::-1], [f[:, ::-1] for f in frames], [f[:, ::-1] for f in frames[::-1]]]
    out: list[np.ndarray] = []
    k = 0
    while len(out) < n:
        out.extend(passes[k % 4])
        k += 1
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--pieces", type=int, default=4, help="videos the same frames are cut into for the Dask run")
    ap.add_argument("--sample", type=Path, default=ROOT / "data/external/videos/WolfgangLanger_Pexels.mp4")
    args = ap.parse_args()

    from clpau.config import ExtractParams, parse_params
    from clpau.core.hardware import usable_cpus
    from clpau.video.extract import run_extract

    cores = usable_cpus()
    frames, fps = sample_frames(args.sample)
    n = int(args.minutes * 60 * fps)
    seq = long_sequence(frames, n)
    tmp = Path(tempfile.mkdtemp(prefix="clpau-extract-scale-"))
    out: dict = {"frames": n, "fps": fps, "minutes": args.minutes, "size": list(frames[0].shape[:2]), "cores": cores}
    try:
        long_video = tmp / "long.mp4"
        write_video(long_video, seq, fps)
        for workers in sorted({1, cores}):
            t = time.perf_counter()
            summary = run_extract([long_video], tmp / f"out{workers}", ExtractParams(), workers=workers,
                                  progress=False)
            seconds = time.perf_counter() - t
            out[f"extract_{workers}_workers"] = {"seconds": seconds, "frames_per_s": n / seconds,
                                                 "per_core": n / seconds / workers, "clips": len(summary.clips)}
            print(f"long video, {n} frames ({args.minutes:g} min), extract with {workers} worker(s): {seconds:.1f} s, "
                  f"{n / seconds:.0f} frames/s, {n / seconds / workers:.0f} per core, {len(summary.clips)} clips",
                  flush=True)

        # the same frames as several videos, one Prefect task each on a local Dask cluster
        videos = tmp / "pieces"
        videos.mkdir()
        step = -(-n // args.pieces)
        for k in range(args.pieces):
            write_video(videos / f"piece{k}.mp4", seq[k * step:(k + 1) * step], fps)
        from ingest import extract_video, task_runner_for  # flows/ingest.py
        from prefect import flow

        params = parse_params({"flows": {"task_runner": "dask"}})

        @flow(task_runner=task_runner_for(params))
        def extract_batch(paths: list[Path]) -> list[str]:
            futures = [extract_video.submit(v, tmp / "parts", params) for v in paths]
            return [str(f.result()) for f in futures]

        t = time.perf_counter()
        parts = extract_batch(sorted(videos.glob("*.mp4")))
        seconds = time.perf_counter() - t
        out["dask"] = {"videos": len(parts), "workers": 2, "seconds": seconds, "frames_per_s": n / seconds,
                       "per_core": n / seconds / cores}
        print(f"{args.pieces} videos of the same frames, Prefect + Dask (2 worker processes, 1 thread each): "
              f"{seconds:.1f} s, {n / seconds:.0f} frames/s, {n / seconds / cores:.0f} per core "
              "(flow and cluster start included)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = ROOT / "reports" / "extract_scale.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
