"""Stage `trainset`: the pretraining set = the base corpus + every batch accepted into the pool, as one manifest.

    data/pool/<batch>/videos/      accepted videos (the ingest flow moves them here)
    data/pool/<batch>/clips/       their extract output, kept from ingest (nothing is extracted twice)
    data/pool/<batch>/batch.json   when and how the batch was accepted
    data/pool.dvc                  the pool's version (`dvc add data/pool` on every acceptance)

`clpau trainset` writes `trainset.out_dir/clips.parquet` — every clip of the base corpus (`trainset.base`) and of
the pool, with its shard path relative to the manifest, so `pretrain` reads it like any extract output — and
`composition.json` (per source: videos, clips, frames, hours, identities); `trainset.metrics` holds the totals for
`dvc exp show`. The drift check compares new batches with the set the promoted model was trained on (a copy of this
manifest in models/promoted/trainset, written on promotion).

The labelled benchmark is guarded here as well as at ingest: a pool video that is one of the benchmark's videos
(same sha256), or whose name puts it on a benchmark subject (read by the benchmark's own rule, `subject_of`), stops the stage
with the batch and video named — evaluation subjects never reach pretraining.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from clpau.core.benchmarks import read_folds, subject_of
from clpau.core.fileio import atomic_dir, write_text
from clpau.core.params import BenchmarkParams
from clpau.ops.params import TrainsetParams


class TrainsetError(RuntimeError):
    """The training set cannot be assembled as asked (an evaluation subject in the pool, a broken batch)."""


def pool_batches(pool: Path) -> list[Path]:
    """The pool's accepted batches (folders with batch.json), in name order (names are acceptance times)."""
    pool = Path(pool)
    return sorted(b for b in pool.iterdir() if (b / "batch.json").exists()) if pool.is_dir() else []


def evaluation_subjects(bench: BenchmarkParams) -> tuple[set[str], dict[str, str]]:
    """(subject names of the labelled benchmark's folds, {sha256 of a benchmark video: its name})."""
    subjects = {s for fold in read_folds(bench.folds) for s in fold} if Path(bench.folds).exists() else set()
    videos = Path(bench.clips) / "videos.parquet"
    hashes = {}
    if videos.exists():
        v = pd.read_parquet(videos, columns=["video", "sha256"]).dropna()
        hashes = {h: Path(name).stem for name, h in zip(v["video"], v["sha256"], strict=True) if h}
    return subjects, hashes


def benchmark_overlap(videos: pd.DataFrame, bench: BenchmarkParams) -> dict[str, str]:
    """{video: reason} for each video of `videos` (an extract output's videos.parquet) that would bring an
    evaluation subject of the labelled benchmark into pretraining: the same file as a benchmark video, or a name
    that puts it on a benchmark subject by the rule that names the benchmark's own videos (`subject_of`: DISFA's
    LeftVideoSN001_comp is SN001, BP4D's F001_T1 is F001)."""
    subjects, hashes = evaluation_subjects(bench)
    reasons = {}
    for name, sha in zip(videos["video"], videos.get("sha256", pd.Series([None] * len(videos))), strict=True):
        stem = Path(str(name)).stem
        if sha and sha in hashes:
            reasons[name] = (f"{Path(str(name)).name} is the labelled benchmark's video {hashes[sha]} (same sha256): "
                             f"evaluation subjects must not be pretrained on")
        elif (who := stem if stem in subjects else subject_of(stem, bench)) in subjects:
            reasons[name] = (f"{Path(str(name)).name} is named as the labelled benchmark's evaluation subject {who} "
                             f"({bench.folds}): evaluation subjects must not be pretrained on; rename it if it is "
                             f"someone else")
    return reasons


def source(name: str, root: Path) -> tuple[pd.DataFrame, dict]:
    """An extract output's clips (with shard_path and source) and its counts: videos, clips, face frames, hours,
    identities."""
    clips_path, videos_path = root / "clips.parquet", root / "videos.parquet"
    if not clips_path.exists():
        raise TrainsetError(f"{clips_path} is missing: {name} has no extract output")
    clips = pd.read_parquet(clips_path)
    clips["shard_path"] = [str(root / s) for s in clips["shard"]]
    clips["source"] = name
    videos = pd.read_parquet(videos_path) if videos_path.exists() else pd.DataFrame()
    ok = videos[videos["status"] == "ok"] if "status" in videos else videos
    frames = int(ok["face_frames"].sum()) if "face_frames" in ok else 0
    seconds = float((ok["face_frames"] / ok["fps"]).sum()) if {"face_frames", "fps"} <= set(ok.columns) else 0.0
    return clips, {"videos": int(clips["video"].nunique()), "clips": len(clips), "face_frames": frames,
                   "hours": round(seconds / 3600, 4), "identities": int(clips["identity"].nunique())}


def write_manifest(clips: pd.DataFrame, out: Path) -> None:
    """clips.parquet in `out` with each shard path relative to `out` (from the absolute/cwd-relative shard_path)."""
    table = clips.drop(columns=["shard_path"]).copy()
    table["shard"] = [os.path.relpath(Path(p).resolve(), Path(out).resolve()) for p in clips["shard_path"]]
    table.to_parquet(Path(out) / "clips.parquet", index=False)


def assemble(p: TrainsetParams, bench: BenchmarkParams) -> dict:
    """Write the manifest and composition of base + pool; return the composition. Raises TrainsetError when a pool
    batch would bring an evaluation subject into pretraining."""
    sources: list[tuple[str, Path, Path | None]] = [(f"base:{Path(b).as_posix()}", Path(b), None) for b in p.base]
    sources += [(f"pool:{b.name}", b / "clips", b) for b in pool_batches(p.pool)]
    parts, composition = [], {}
    for name, root, batch in sources:
        if batch is not None and (root / "videos.parquet").exists():
            refused = benchmark_overlap(pd.read_parquet(root / "videos.parquet"), bench)
            if refused:
                raise TrainsetError(f"pool batch {batch.name}: " + "; ".join(refused.values())
                                    + f" — remove {batch} (and `dvc add {p.pool}`) to go on")
        clips, stats = source(name, root)
        parts.append(clips)
        composition[name] = stats
    clips = pd.concat(parts, ignore_index=True)
    total = {"videos": sum(s["videos"] for s in composition.values()),
             "clips": len(clips), "face_frames": sum(s["face_frames"] for s in composition.values()),
             "hours": round(sum(s["hours"] for s in composition.values()), 4),
             "identities": int(clips["identity"].nunique()),
             "batches": sum(1 for n in composition if n.startswith("pool:"))}
    result = {"batches": [n.split(":", 1)[1] for n in composition if n.startswith("pool:")], "sources": composition,
              "total": total}
    with atomic_dir(p.out_dir) as tmp:
        write_manifest(clips, tmp)
        # paths were made relative to the temporary folder, which becomes out_dir: same depth, same parent
        (tmp / "composition.json").write_text(json.dumps(result, indent=1) + "\n")
    write_text(p.metrics, json.dumps({"trainset": total}, indent=1) + "\n")
    return result
