"""Benchmark of `clpau extract` end to end (decode -> detect -> landmarks -> align -> write) on the sample video.

    python bench/extract.py [--video PATH] [--repeat 3] [--naive]

Prints frames/s for 1 worker and for all cores: "cold" includes starting the workers and loading the dlib models
(what one `clpau extract` call on this one video costs), "warm" reuses started workers (what every further video
of a batch costs). `--naive` also times the textbook loop (full-frame HOG + landmarks + align on every frame) as
the baseline the tracker is measured against. The goal on a 2-core machine is >= 250 frames/s at 640x360.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from clpau.config import AssetsParams, ExtractParams
from clpau.video.extract import Workers, run_extract


def naive(video: Path, params: ExtractParams, limit: int = 200) -> float:
    from clpau.video.decode import decode
    from clpau.video.detect import FaceModels, Template, align, detect, landmarks

    models, template = FaceModels(), Template.from_params(params)
    t0, n = time.perf_counter(), 0
    for frame in decode(video, None, None, params.max_side):
        dets = detect(models, frame.gray, 1.0, 0.0)
        if dets:
            box = max(dets, key=lambda d: d[0][2] - d[0][0])[0]
            align(frame.rgb(), landmarks(models, frame.gray, box), template)
        n += 1
        if n == limit:
            break
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=AssetsParams().out_dir / "videos/WolfgangLanger_Pexels.mp4")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--naive", action="store_true", help="also time the detect-every-frame baseline")
    args = ap.parse_args()
    if not args.video.exists():
        raise SystemExit(f"{args.video} is missing: run `clpau assets` first")
    params = ExtractParams()
    cores = os.cpu_count() or 1
    print(f"video: {args.video.name}; {cores} cores; crop {params.crop_size}px; chunk_frames {params.chunk_frames}")
    if args.naive:
        print(f"naive detect-every-frame loop, 1 core: {naive(args.video, params):.0f} frames/s")
    for n in sorted({1, cores}):
        with tempfile.TemporaryDirectory() as tmp, Workers(n) as pool:
            t0 = time.perf_counter()
            s = run_extract([args.video], Path(tmp) / "cold", params, progress=False, pool=pool)
            cold = s.frames / (time.perf_counter() - t0)
            warm = []
            for r in range(args.repeat):
                t0 = time.perf_counter()
                s = run_extract([args.video], Path(tmp) / f"warm{r}", params, progress=False, pool=pool)
                warm.append(s.frames / (time.perf_counter() - t0))
        face = s.videos.iloc[0]
        print(f"workers={n}: cold {cold:.0f} frames/s, warm {statistics.median(warm):.0f} frames/s "
              f"(median of {args.repeat}; {face['frames']} frames, {face['face_frames']} with a face)")


if __name__ == "__main__":
    main()
