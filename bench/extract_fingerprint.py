"""Which step of face extraction gives other bytes on another machine: a hash of each step's output for a few videos,
and the first step that differs from a reference run.

    python bench/extract_fingerprint.py                       # print this machine's hashes
    python bench/extract_fingerprint.py --compare bench/fingerprints/reference.json
    python bench/extract_fingerprint.py --save bench/fingerprints/NAME.json

On one machine extraction is deterministic (tests/test_resume.py), yet `make repro` on two 2-core machines wrote other
bytes for the synthetic clips while the rendered videos and the real sample's clips were the same (dvc.lock of
98a07f0 vs 7af9922). The steps, in the order a frame goes through them: decoded grey and RGB pixels (PyAV/FFmpeg),
the tracker's boxes and scores (dlib HOG), its 68 landmarks (dlib shape predictor), the face descriptor of the
person followed (dlib ResNet), the alignment matrices, the aligned crops (Pillow), their quality figures, and the
written extract output. The first step whose hash differs is where to look. This script found one cause: with
`OPENBLAS_CORETYPE=Haswell` (or Zen, Core2) the crops changed, since the alignment inverted its matrix with
np.linalg.inv through OpenBLAS's per-CPU kernel; the alignment now uses plain arithmetic
(tests/test_extract.py checks it). bench/fingerprints/reference.json names the commit and machine it was taken on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from clpau.config import ExtractParams, load_params
from clpau.video.chunk import ChunkTask, process_chunk
from clpau.video.decode import decode
from clpau.video.extract import run_extract

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ["data/raw/synth/pretrain/P0001_V1.mp4", "data/raw/synth/pretrain/P0002_V1.mp4",
          "data/raw/synth/labelled/S001_T1.mp4", "data/external/videos/WolfgangLanger_Pexels.mp4"]
STEPS = ["decoded grey", "decoded rgb", "boxes+scores", "landmarks", "descriptor", "affines", "crops",
         "quality", "extract output"]


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(str((a.dtype, a.shape)).encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def fingerprint(video: Path, params: ExtractParams, work: Path) -> dict[str, str]:
    grey, rgb = hashlib.sha256(), hashlib.sha256()
    for frame in decode(video, None, None, params.max_side):
        grey.update(frame.gray.tobytes())
        rgb.update(frame.rgb().tobytes())
    shard = work / f"{video.stem}.npy"
    res = process_chunk(ChunkTask(0, 0, str(video), None, None, str(shard), params))
    if res.failure:
        raise RuntimeError(f"{video}: {res.failure}")
    crops = np.load(shard) if shard.exists() else None
    out = work / video.stem
    run_extract([video], out, params, workers=1, identity_rule="prefix", progress=False)
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in (".npy", ".parquet"))
    written = hashlib.sha256(b"".join(p.relative_to(out).as_posix().encode() + p.read_bytes() for p in files))
    return {"decoded grey": grey.hexdigest()[:16], "decoded rgb": rgb.hexdigest()[:16],
            "boxes+scores": digest(res.face, res.box, res.score), "landmarks": digest(res.landmarks),
            "descriptor": digest(res.descriptor), "affines": digest(res.affine), "crops": digest(crops),
            "quality": digest(res.brightness, res.sharpness), "extract output": written.hexdigest()[:16]}


def machine() -> dict[str, str]:
    import av
    import dlib
    import PIL

    cpu = ""
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    simd = " ".join(f for f in ("sse4_2", "avx", "fma", "avx2", "avx512f", "avx512_fp16", "amx_tile") if f in flags)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {"commit": commit.stdout.strip(), "cpu": cpu or platform.processor(), "simd": simd,
            "python": platform.python_version(),
            "numpy": np.__version__, "dlib": dlib.__version__, "av": av.__version__, "pillow": PIL.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="*", type=Path, help=f"default: {', '.join(VIDEOS)} (after `make repro`)")
    ap.add_argument("--save", type=Path, help="write this machine's hashes (and what it is) as JSON")
    ap.add_argument("--compare", type=Path, help="a saved run: name each video's first step that differs")
    args = ap.parse_args()
    videos = args.videos or [ROOT / v for v in VIDEOS]
    missing = [str(v) for v in videos if not v.exists()]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} (run `make repro` first)")
    params = load_params(ROOT / "params.yaml").extract  # as the pipeline's extract stages
    run = {"machine": machine(), "videos": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for video in videos:
            run["videos"][video.name] = fingerprint(video, params, Path(tmp))
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(run, indent=2) + "\n")
    print("  ".join(f"{k} {v}" for k, v in run["machine"].items()))
    for name, steps in run["videos"].items():
        print(f"{name}")
        for step in STEPS:
            print(f"  {step:<15} {steps[step]}")
    if args.compare:
        ref = json.loads(args.compare.read_text())
        print(f"reference: {'  '.join(f'{k} {v}' for k, v in ref['machine'].items())}")
        for name, steps in run["videos"].items():
            theirs = ref["videos"].get(name)
            if theirs is None:
                print(f"  {name}: not in the reference")
                continue
            first = next((s for s in STEPS if steps[s] != theirs[s]), None)
            print(f"  {name}: " + ("identical at every step" if first is None else f"first differs at: {first}"))


if __name__ == "__main__":
    main()
