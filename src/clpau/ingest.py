"""New video batches: stage what is in the inbox, extract it video by video, gate it, check drift, then accept it
into the training pool or quarantine it with the reasons. The Prefect flow `flows/ingest.py` calls these functions
one task each; every step also works without Prefect.

Layout (params.yaml: flows):
    inbox/                      users drop videos here
    batches/<batch>/videos/     a staged batch (moved out of the inbox, so late arrivals wait for the next run)
    batches/<batch>/parts/<v>/  one extract output per video (a task each; retried alone when it fails)
    batches/<batch>/clips/      the merged extract output: what the gate and the drift check read
    batches/<batch>/reports/    GX data docs, Evidently report, decision.json
    pool/<batch>/videos|clips   accepted videos and their extract output (trainset.pool; the `trainset` stage
                                reads it), batch.json; then `dvc add pool` + a git commit of pool.dvc
    quarantine/<batch>/         rejected videos + reasons.json

Besides the quality gate and drift, a batch is refused when it would bring an evaluation subject of the labelled
benchmark into pretraining (trainset.benchmark_overlap) or holds a video that an earlier batch brought in.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from . import sync
from .config import BenchmarkParams, Params
from .extract import VIDEO_EXTENSIONS, run_extract
from .fileio import write_json, write_parquet
from .trainset import benchmark_overlap, pool_batches, source


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


def refusals(clips: Path, pool: Path, bench: BenchmarkParams, batch: str) -> list[str]:
    """Why the batch must not enter the pool whatever its quality: evaluation subjects of the labelled benchmark,
    videos accepted before (by sha256), a batch name already taken."""
    videos = pd.read_parquet(Path(clips) / "videos.parquet")
    reasons = [f"evaluation subject: {r}" for r in benchmark_overlap(videos, bench)]
    seen = {}
    for b in pool_batches(pool):
        v = Path(b) / "clips" / "videos.parquet"
        if v.exists():
            seen.update({h: b.name for h in pd.read_parquet(v, columns=["sha256"])["sha256"].dropna()})
    for name, sha in zip(videos["video"], videos["sha256"], strict=True):
        if sha and sha in seen:
            reasons.append(f"already accepted: {Path(str(name)).name} came into the pool with batch {seen[sha]}")
    if (Path(pool) / batch).exists():
        reasons.append(f"already accepted: a batch named {batch} is in {pool}")
    return reasons


def decide(validation: dict, drift: dict | None, refused: list[str] = (), quarantine_on_drift: bool = True) -> dict:
    """accept or quarantine, with every reason."""
    reasons = list(refused) + [f"quality gate: {f['reason']}" for f in validation.get("failed", [])]
    if drift is not None and drift.get("drift") and quarantine_on_drift:
        reasons.append(f"drift: {drift['drifted_share']:.0%} of the columns drifted against the training set "
                       f"({', '.join(drift['drifted_columns'])}); threshold {drift['threshold']:.0%}")
    return {"accepted": not reasons, "reasons": reasons}


def accept(batch_dir: Path, pool: Path, version: bool = True) -> dict:
    """Move the batch's videos and extract output into pool/<batch>, write batch.json and, in a DVC repo,
    `dvc add` the pool (one new version) and commit its pointer in git."""
    batch_dir, pool = Path(batch_dir), Path(pool)
    dest = pool / batch_dir.name
    dest.mkdir(parents=True)
    shutil.move(str(batch_dir / "videos"), dest / "videos")
    shutil.move(str(batch_dir / "clips"), dest / "clips")
    videos = pd.read_parquet(dest / "clips" / "videos.parquet", columns=["video"])["video"]
    _, stats = source(batch_dir.name, dest / "clips")
    record = {"batch": batch_dir.name, "accepted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "videos": sorted(Path(str(v)).name for v in videos), "clips": stats["clips"],
              "identities": stats["identities"], "hours": stats["hours"], "reports": str(batch_dir / "reports")}
    write_json(dest / "batch.json", record)
    versioned, commit = False, None
    root = dvc_root(pool)
    if version and root is not None:
        target = pool.resolve().relative_to(root)
        sync.run(root, sys.executable, "-m", "dvc", "add", "-q", str(target))
        versioned = True
        pointer = target.with_name(target.name + ".dvc")
        commit = sync.commit(root, [str(pointer), str(target.parent / ".gitignore")],
                             f"ingest: accept batch {batch_dir.name} ({len(record['videos'])} videos, "
                             f"{record['clips']} clips)")
    return {"pool": str(dest), "videos": record["videos"], "clips": record["clips"], "dvc_versioned": versioned,
            "commit": commit}


def dvc_root(path: Path) -> Path | None:
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
