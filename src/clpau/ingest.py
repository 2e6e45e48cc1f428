"""New video batches: stage what is in the inbox, extract it video by video, gate it, check drift, then accept it
into the training pool or quarantine it with the reasons. The Prefect flow `flows/ingest.py` calls these functions
one task each; every step also works without Prefect.

Layout (params.yaml: flows):
    inbox/                      users drop videos here
    batches/<batch>/videos/     a staged batch (moved out of the inbox, so late arrivals wait for the next run)
    batches/<batch>/parts/<v>/  one extract output per video (a task each; retried alone when it fails)
    batches/<batch>/clips/      the merged extract output: what the gate and the drift check read
    batches/<batch>/reports/    GX data docs, Evidently report, decision.json
    pool/<batch>/               accepted videos (then `dvc add pool`, when the project is a DVC repo)
    quarantine/<batch>/         rejected videos + reasons.json
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from .config import Params
from .extract import VIDEO_EXTENSIONS, run_extract
from .fileio import write_parquet


def stage_batch(inbox: Path, batches: Path, name: str | None = None) -> tuple[str, list[Path]]:
    """Move the inbox's videos (recursively) into a new batch folder; returns (batch name, staged videos)."""
    inbox, batches = Path(inbox), Path(batches)
    found = sorted(p for p in inbox.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS) \
        if inbox.exists() else []
    name = name or time.strftime("%Y%m%d-%H%M%S")
    target = batches / name / "videos"
    staged = []
    for p in found:
        dest = target / p.relative_to(inbox)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(p), dest)
        staged.append(dest)
    return name, staged


def extract_one(video: Path, parts_dir: Path, params: Params) -> Path:
    """One video's extract output in its own folder (so videos can run on different workers)."""
    out = Path(parts_dir) / Path(video).stem
    run_extract([video], out, params.extract, workers=1, identity_rule="stem", progress=False)
    return out


def merge_extracts(parts: list[Path], out: Path) -> Path:
    """Merge single-video extract outputs into one (tables concatenated, frame folders moved)."""
    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    videos, clips = [], []
    for part in map(Path, parts):
        v = pd.read_parquet(part / "videos.parquet")
        videos.append(v)
        c = pd.read_parquet(part / "clips.parquet")
        clips.append(c)
        for key in v["key"].dropna():
            src = part / "frames" / key
            if src.exists() and not (out / "frames" / key).exists():
                shutil.move(str(src), out / "frames" / key)
    for name, frames in (("videos.parquet", videos), ("clips.parquet", clips)):
        write_parquet(out / name, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
    return out


def decide(validation: dict, drift: dict | None, quarantine_on_drift: bool = True) -> dict:
    """accept or quarantine, with every reason."""
    reasons = [f"quality gate: {f['reason']}" for f in validation.get("failed", [])]
    if drift is not None and drift.get("drift") and quarantine_on_drift:
        reasons.append(f"drift: {drift['drifted_share']:.0%} of the columns drifted against the training pool "
                       f"({', '.join(drift['drifted_columns'])}); threshold {drift['threshold']:.0%}")
    return {"accepted": not reasons, "reasons": reasons}


def accept(batch_dir: Path, pool: Path, version: bool = True) -> dict:
    """Move the batch's videos into pool/<batch> and, in a DVC repo, `dvc add` the pool (one new version)."""
    dest = Path(pool) / Path(batch_dir).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(Path(batch_dir) / "videos"), dest)
    versioned = False
    root = _dvc_root(Path(pool))
    if version and root is not None:
        target = Path(pool).resolve().relative_to(root)
        proc = subprocess.run([sys.executable, "-m", "dvc", "add", str(target)], cwd=root, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"`dvc add {target}` failed: {proc.stderr.strip()[-400:]}")
        versioned = True
    return {"pool": str(dest), "videos": sorted(str(p) for p in dest.rglob("*") if p.is_file()),
            "dvc_versioned": versioned}


def _dvc_root(path: Path) -> Path | None:
    """The DVC repo that holds `path`, if any."""
    for d in [path.resolve(), *path.resolve().parents]:
        if (d / ".dvc").is_dir():
            return d
    return None


def quarantine(batch_dir: Path, quarantine_dir: Path, decision: dict) -> dict:
    dest = Path(quarantine_dir) / Path(batch_dir).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(Path(batch_dir) / "videos"), dest)
    (dest / "reasons.json").write_text(json.dumps(decision, indent=2) + "\n")
    return {"quarantine": str(dest)}
