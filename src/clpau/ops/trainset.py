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

import numpy as np
import pandas as pd

from clpau.core import faces
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


def face_gallery(bench: BenchmarkParams, threshold: float) -> tuple[np.ndarray, list[str], str | None]:
    """(descriptors, subjects) of the labelled benchmark's videos of evaluation subjects, for the guard by face, and
    why that guard is off (None when it is on): the benchmark's clips hold no descriptors, or dlib's descriptor does
    not tell its subjects apart — the synthetic benchmark's rendered people (docs/operations.md): more than half of
    its pairs of different subjects closer than `threshold`, so any face would "match" one of them."""
    table = Path(bench.clips) / "videos.parquet"
    if not table.exists():
        return faces.as_matrix([]), [], f"no descriptors: {table} does not exist"
    v = pd.read_parquet(table)
    if "descriptor" not in v:
        return faces.as_matrix([]), [], f"no descriptors in {table} (extracted before clpau kept them)"
    subjects, _ = evaluation_subjects(bench)
    v = v[v["descriptor"].notna()]
    who = [subject_of(Path(str(n)).stem, bench) for n in v["video"]]
    keep = [i for i, s in enumerate(who) if s in subjects]
    gallery, names = faces.as_matrix([v["descriptor"].iloc[i] for i in keep]), [who[i] for i in keep]
    if not names:
        return gallery, names, f"no descriptor of an evaluation subject in {table}"
    close, pairs = faces.confusions(gallery, names, threshold)
    if pairs and close > pairs / 2:
        return gallery, names, (f"dlib's descriptor does not tell the benchmark's subjects apart ({close} of {pairs} "
                                f"pairs of different subjects closer than {threshold}); names and sha256 still guard")
    return gallery, names, None


def benchmark_overlap(videos: pd.DataFrame, bench: BenchmarkParams, face_threshold: float | None = None,
                      gallery: tuple[np.ndarray, list[str], str | None] | None = None) -> dict[str, str]:
    """{video: reason} for each video of `videos` (an extract output's videos.parquet) that would bring an
    evaluation subject of the labelled benchmark into pretraining: the same file as a benchmark video, a name
    that puts it on a benchmark subject by the rule that names the benchmark's own videos (`subject_of`: DISFA's
    LeftVideoSN001_comp is SN001, BP4D's F001_T1 is F001), or — with `face_threshold` — the face of an evaluation
    subject, whatever the file's name, encoding, mirroring, crop or lighting (its descriptor within the threshold of
    one of the benchmark's videos of that subject; `gallery`: `face_gallery`'s answer, when the caller checks
    several tables against it)."""
    subjects, hashes = evaluation_subjects(bench)
    if gallery is None:
        gallery = face_gallery(bench, face_threshold) if face_threshold else (None, [], "not asked")
    gallery, names, off = gallery
    descriptors = videos["descriptor"] if "descriptor" in videos else pd.Series([None] * len(videos))
    reasons = {}
    for name, sha, desc in zip(videos["video"], videos.get("sha256", pd.Series([None] * len(videos))), descriptors,
                               strict=True):
        stem = Path(str(name)).stem
        if sha and sha in hashes:
            reasons[name] = (f"{Path(str(name)).name} is the labelled benchmark's video {hashes[sha]} (same sha256): "
                             f"evaluation subjects must not be pretrained on")
        elif (who := stem if stem in subjects else subject_of(stem, bench)) in subjects:
            reasons[name] = (f"{Path(str(name)).name} is named as the labelled benchmark's evaluation subject {who} "
                             f"({bench.folds}): evaluation subjects must not be pretrained on; rename it if it is "
                             f"someone else")
        elif off is None and desc is not None:
            dist = faces.distances(faces.as_matrix([desc]), gallery)[0]
            k = int(np.argmin(dist))
            if dist[k] < face_threshold:
                reasons[name] = (f"{Path(str(name)).name} shows the labelled benchmark's evaluation subject "
                                 f"{names[k]} (face-descriptor distance {dist[k]:.2f} < {face_threshold}, "
                                 f"trainset.face_threshold): evaluation subjects must not be pretrained on")
    return reasons


def read_videos(root: Path) -> pd.DataFrame:
    """An extract output's videos.parquet (empty if it has none)."""
    path = Path(root) / "videos.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def source(name: str, root: Path, videos: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """An extract output's clips (with shard_path and source) and its counts: videos, clips, face frames, hours,
    identities. `videos`: its videos.parquet, when the caller has read it."""
    clips_path = root / "clips.parquet"
    if not clips_path.exists():
        raise TrainsetError(f"{clips_path} is missing: {name} has no extract output")
    clips = pd.read_parquet(clips_path)
    clips["shard_path"] = [str(root / s) for s in clips["shard"]]
    clips["source"] = name
    videos = read_videos(root) if videos is None else videos
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


def named(source_name: str, p: TrainsetParams) -> bool:
    """Whether a source's persons are its names (`trainset.names_are_persons`)."""
    return source_name.startswith("base:") and \
        source_name.split(":", 1)[1] in {Path(n).as_posix() for n in p.names_are_persons}


def find_persons(sources: list[tuple[str, pd.DataFrame, pd.DataFrame]], p: TrainsetParams
                 ) -> dict[tuple[str, str], str]:
    """{(source, video): person} over every source at once, so one person's videos in the base corpus, in several
    batches and under several names get one id: videos whose face descriptors chain within `face_threshold` are one
    person (`person-0001`, ... in order of first appearance). A source in `names_are_persons` keeps its names, as
    does a video without a descriptor (its name: `name:<identity>`). `sources`: (name, videos, clips) each."""
    keys, descriptors = [], []
    for name, v, clips in sources:
        if named(name, p) or "descriptor" not in v:
            continue
        with_clips = set(clips["video"])
        for video, desc in zip(v["video"], v["descriptor"], strict=True):
            if desc is not None and video in with_clips:
                keys.append((name, video))
                descriptors.append(desc)
    labels = faces.cluster(faces.as_matrix(descriptors), p.face_threshold)
    return {k: f"person-{label + 1:04d}" for k, label in zip(keys, labels, strict=True)}


def assemble(p: TrainsetParams, bench: BenchmarkParams) -> dict:
    """Write the manifest and composition of base + pool; return the composition. Raises TrainsetError when a pool
    batch would bring an evaluation subject into pretraining."""
    sources: list[tuple[str, Path, Path | None]] = [(f"base:{Path(b).as_posix()}", Path(b), None) for b in p.base]
    sources += [(f"pool:{b.name}", b / "clips", b) for b in pool_batches(p.pool)]
    parts, tables, composition = [], [], {}
    gallery = face_gallery(bench, p.face_threshold)  # once, for every batch
    for name, root, batch in sources:
        videos = read_videos(root)
        if batch is not None and len(videos):
            refused = benchmark_overlap(videos, bench, p.face_threshold, gallery)
            if refused:
                raise TrainsetError(f"pool batch {batch.name}: " + "; ".join(refused.values())
                                    + f" — remove {batch} (and `dvc add {p.pool}`) to go on")
        clips, stats = source(name, root, videos)
        parts.append(clips)
        tables.append(videos)
        composition[name] = stats
    by_face = find_persons([(n, v, c) for (n, _, _), v, c in zip(sources, tables, parts, strict=True)], p)
    for (name, _, _), clips in zip(sources, parts, strict=True):
        clips["person"] = clips["identity"].astype(str) if named(name, p) else [
            by_face.get((name, v), f"name:{i}") for v, i in zip(clips["video"], clips["identity"], strict=True)]
        composition[name]["persons"] = int(clips["person"].nunique())
    clips = pd.concat(parts, ignore_index=True)
    total = {"videos": sum(s["videos"] for s in composition.values()),
             "clips": len(clips), "face_frames": sum(s["face_frames"] for s in composition.values()),
             "hours": round(sum(s["hours"] for s in composition.values()), 4),
             "identities": int(clips["identity"].nunique()), "persons": int(clips["person"].nunique()),
             "batches": sum(1 for n in composition if n.startswith("pool:"))}
    result = {"batches": [n.split(":", 1)[1] for n in composition if n.startswith("pool:")], "sources": composition,
              "total": total}
    with atomic_dir(p.out_dir) as tmp:
        write_manifest(clips, tmp)
        # paths were made relative to the temporary folder, which becomes out_dir: same depth, same parent
        (tmp / "composition.json").write_text(json.dumps(result, indent=1) + "\n")
    write_text(p.metrics, json.dumps({"trainset": total}, indent=1) + "\n")
    return result
