"""Pack what `bench/gpu.sh` needs on a GPU machine that has Python and PyTorch but no network (a cluster node, a lent
accelerator): a slice of the extracted pretraining clips and the wheels of the few pure-Python-or-small packages
`clpau pretrain` imports that such an image usually lacks. Writes `.gpu/` (git-ignored), about 43 MB:

    python bench/gpu_pack.py [--videos 10] [--python-version 3.12]

`.gpu/clips` is an extract output folder of its own (clips.parquet + frame shards of one video per person, the
first `--videos` people), so the loader reads real aligned faces there. `.gpu/wheels` holds, at this project's pins
(requirements.lock), the packages in WHEELS: what a short `clpau pretrain` run imports (dvclive and the parts of dvc
it loads, pydantic) minus what a CUDA PyTorch image with Lightning already holds. A machine with the full
environment (`make venv`) needs no wheels: `bench/gpu.sh` installs them only when `.gpu/wheels` exists.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# Imported by `clpau pretrain` (config: pydantic; the loop: dvclive, which imports dvc at module level) and absent
# from a CUDA PyTorch + Lightning image; found by listing sys.modules after a 3-step run. Lightning Fabric too: an
# image's `lightning` package holds it as `lightning.fabric`, not as the top-level `lightning_fabric` imported here.
WHEELS = ["lightning-fabric", "lightning-utilities", "pydantic", "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions", "dvclive", "dvc",
          "dvc-data", "dvc-objects", "dvc-http", "dvc-render", "dvc-studio-client", "scmrepo", "dulwich", "fsspec",
          "atpublic", "diskcache", "dpath", "flatten-dict", "flufl.lock", "funcy", "orjson", "pydot", "pygtrie",
          "ruamel.yaml", "sqltrie", "voluptuous", "wcwidth", "zc.lockfile",
          # the clip store (bench/gpu.sh's store parts): LitData and what it imports, the JPEG codec
          "litdata", "simplejpeg", "boto3", "botocore", "s3transfer", "jmespath", "tifffile", "filelock"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def pins() -> dict[str, str]:
    """name -> version from requirements.lock (names compared in PEP 503 normal form)."""
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            out[normal(name)] = version
    return out


def normal(name: str) -> str:
    return canonicalize_name(name)


def pack_clips(src: Path, out: Path, videos: int, replicas: int = 1) -> int:
    """Copy one video per person (the first `videos` people) and list their clips `replicas` times over, each copy
    as other people (`P0001~3`) reading the same shards; returns the bytes copied."""
    clips = pd.read_parquet(src / "clips.parquet")
    first = clips.groupby("identity", sort=True)["video_key"].first().head(videos)
    keep = clips[clips["video_key"].isin(set(first))].reset_index(drop=True)
    if out.exists():
        shutil.rmtree(out)
    size = 0
    for key in first:
        shutil.copytree(src / "frames" / key, out / "frames" / key)
        size += sum(f.stat().st_size for f in (out / "frames" / key).iterdir())
    copies = []
    for r in range(replicas):
        copy = keep.copy()
        for col in ("clip_id", "video_key", "identity"):
            copy[col] = copy[col] + f"~{r}"
        copies.append(copy)
    pd.concat(copies, ignore_index=True).to_parquet(out / "clips.parquet")
    return size


def download_wheels(out: Path, python_version: str) -> None:
    pinned = pins()
    missing = [n for n in WHEELS if normal(n) not in pinned]
    if missing:
        sys.exit(f"not in requirements.lock: {', '.join(missing)}")
    if out.exists():
        shutil.rmtree(out)
    platform_args = [arg for p in PLATFORMS for arg in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", *platform_args, "-d", str(out),
           *(f"{n}=={pinned[normal(n)]}" for n in WHEELS)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    # a pip config may name find-links folders that are absent: pip then warns once per package, harmlessly
    noise = "WARNING: Location"
    sys.stderr.write("".join(line for line in proc.stderr.splitlines(True) if not line.startswith(noise)))
    if proc.returncode:
        sys.exit(f"pip download failed ({proc.returncode})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=Path, default=ROOT / "data" / "clips" / "synth_pretrain",
                    help="extract output to slice (default: the pipeline's pretraining clips; `make repro` first)")
    ap.add_argument("--videos", type=int, default=10, help="people (one video each) in the slice")
    ap.add_argument("--replicas", type=int, default=20,
                    help="times the slice's clips are listed (as other people): epochs of a real corpus's length, "
                         "so that a GPU-profile run is not all epoch starts; the frames are read from the same shards")
    ap.add_argument("--python-version", default="3.12", help="the GPU machine's Python, for the compiled wheels")
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu")
    args = ap.parse_args()
    if not (args.clips / "clips.parquet").exists():
        sys.exit(f"{args.clips / 'clips.parquet'} is missing: run `make repro` first")
    size = pack_clips(args.clips, args.out / "clips", args.videos, args.replicas)
    download_wheels(args.out / "wheels", args.python_version)
    wheels = sorted((args.out / "wheels").glob("*.whl"))
    wheel_bytes = sum(w.stat().st_size for w in wheels)
    print(f"{args.out}: clips of {args.videos} people ({size / 2**20:.1f} MiB) x {args.replicas}, {len(wheels)} wheels "
          f"({wheel_bytes / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
