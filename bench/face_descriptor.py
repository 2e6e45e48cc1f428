"""What the person descriptor costs (docs/operations.md, "Who is in a video"): dlib's `compute_face_descriptor` on
one face of the single-face sample (10 calls, and a batch of 4 chips), and `run_extract` of the two real sample
videos with one descriptor a chunk against `extract.descriptor_samples` a video (one worker, `--runs` each).

    python bench/face_descriptor.py [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    import dlib
    import pandas as pd

    from clpau.config import AssetsParams, ExtractParams
    from clpau.synth.assets import fetch_assets
    from clpau.video.decode import decode
    from clpau.video.detect import FaceModels, _rect, detect
    from clpau.video.extract import run_extract

    work = Path(tempfile.mkdtemp(prefix="descriptor-"))
    assets = fetch_assets(AssetsParams(out_dir=work / "external", cache_dir=ROOT / "data" / "cache"),
                          log=lambda *_: None)
    models = FaceModels()
    frame = next(iter(decode(assets.videos / "single_face.mp4", None, None, 1280)))
    rgb, box = frame.rgb(), detect(models, frame.gray, 1.0, 0.0)[0][0]
    models.descriptor(rgb, box)  # loads the network
    t = time.perf_counter()
    for _ in range(10):
        models.descriptor(rgb, box)
    print(f"descriptor (landmarks + network): {(time.perf_counter() - t) * 100:.1f} ms a face")
    chip = dlib.get_face_chip(rgb, models.predictor(rgb, _rect(box)), size=150)
    t = time.perf_counter()
    for _ in range(10):
        models._recognizer.compute_face_descriptor([chip] * 4)
    print(f"network on a batch of 4 chips: {(time.perf_counter() - t) * 100 / 4:.1f} ms a face")

    videos = [assets.videos / "WolfgangLanger_Pexels.mp4", assets.videos / "single_face.mp4"]
    default = ExtractParams()
    for run in range(args.runs):
        for label, params in (("1 a chunk", default.model_copy(update={"descriptor_every": 10 ** 6,
                                                                        "descriptor_samples": 1})),
                              (f"{default.descriptor_samples} a video", default)):
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            run_extract(videos, out, params, workers=1, progress=False)
            v = pd.read_parquet(out / "videos.parquet")
            print(f"run {run}, descriptors {label}: {time.perf_counter() - t:.2f} s for {int(v['frames'].sum())} "
                  f"frames ({v['descriptor_frames'].tolist()} descriptors)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
