"""`clpau ingest purge VIDEO`: remove a person from the pool — every video of theirs, their clips and frames, and
with them the face descriptors — as a person who withdraws consent may ask. The person is found by face: the
videos whose descriptors chain to VIDEO's within `trainset.face_threshold` (core/faces.py), in every accepted batch
and in quarantine, whatever their names. Each batch.json records what was removed, when, by whom and why (names
and counts, never a descriptor); a batch left empty is removed; in a DVC repo the pool gets a new version (the
old one stays in DVC's cache and history until `dvc gc`: docs/operations.md says how to remove it there too).
"""

from __future__ import annotations

import getpass
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clpau.core import faces
from clpau.core.fileio import write_json, write_parquet
from clpau.ops.ingest import version_pool
from clpau.ops.trainset import pool_batches, source


class PurgeError(ValueError):
    """The video to purge is unknown or ambiguous; nothing was removed."""


@dataclass(frozen=True)
class Held:
    """One video the pool or the quarantine holds: where, under which name, and its extract output."""
    place: str       # "pool/<batch>" or "quarantine/<batch>"
    folder: Path     # the batch folder
    name: str        # the batch's name of the video (videos/<name>)
    clips: Path      # its extract output (a pool batch's clips/, a quarantined video's part)
    key: str         # its frames folder
    descriptor: object


def _entry(video: str, names: list[str]) -> str | None:
    """The batch name of an extract row's `video` (the staged path ends with videos/<name>)."""
    hits = [n for n in names if str(video).replace("\\", "/").endswith("videos/" + n)]
    return max(hits, key=len) if hits else None


def held_videos(pool: Path, quarantine_dir: Path) -> list[Held]:
    out = []
    for b in pool_batches(pool):
        names = json.loads((b / "batch.json").read_text())["videos"]
        table = b / "clips" / "videos.parquet"
        if table.exists():
            for _, row in pd.read_parquet(table).iterrows():
                if (name := _entry(row["video"], names)) is not None:
                    out.append(Held(f"pool/{b.name}", b, name, b / "clips", row["key"], row.get("descriptor")))
    q = Path(quarantine_dir)
    for record_path in sorted(q.glob("*/reasons.json")) if q.is_dir() else []:
        qdir = record_path.parent
        for name, d in json.loads(record_path.read_text())["videos"].items():
            part = qdir / d["part"] if d.get("part") else None
            if d.get("released") or part is None or not (part / "videos.parquet").exists():
                continue
            row = pd.read_parquet(part / "videos.parquet").iloc[0]
            out.append(Held(f"quarantine/{qdir.name}", qdir, name, part, row["key"], row.get("descriptor")))
    return out


def same_person(held: list[Held], target: Held, threshold: float) -> list[Held]:
    """`target` and every video whose face chains to it (one person by core/faces.cluster)."""
    with_face = [h for h in held if h.descriptor is not None]
    if target.descriptor is None:
        return [target]
    labels = faces.cluster(faces.as_matrix([h.descriptor for h in with_face]), threshold)
    mine = labels[with_face.index(target)]
    return [h for h, label in zip(with_face, labels, strict=True) if label == mine]


def find(held: list[Held], video: str) -> Held:
    """The one held video that `video` names: `BATCH/NAME`, or a NAME only one batch holds."""
    hits = [h for h in held if f"{h.folder.name}/{h.name}" == video] or [h for h in held if h.name == video]
    if not hits:
        raise PurgeError(f"no video {video!r} in the pool or in quarantine (name it as BATCH/NAME; `clpau ingest "
                         f"list` shows quarantined ones, pool/<batch>/batch.json the accepted)")
    if len(hits) > 1:
        raise PurgeError(f"{video!r} is in several batches ({', '.join(h.place for h in hits)}): name it as "
                         f"BATCH/NAME")
    return hits[0]


def purge(pool: Path, quarantine_dir: Path, video: str, threshold: float, why: str, by: str | None = None,
          dry_run: bool = False, version: bool = True) -> dict:
    """Remove the person `video` shows from the pool and the quarantine (see the module docstring); returns
    {"videos": [place/name, ...], "batches_removed": [...], "commit": ...}. `dry_run` only lists them."""
    if not why or not why.strip():
        raise PurgeError("a purge needs a reason (--reason): it is recorded in each batch.json it changes")
    held = held_videos(pool, quarantine_dir)
    gone = same_person(held, find(held, video), threshold)
    listed = sorted(f"{h.place}/{h.name}" for h in gone)
    if dry_run:
        return {"videos": listed, "batches_removed": [], "commit": None, "dry_run": True}
    by = by or getpass.getuser()
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "by": by, "reason": why}
    removed = []
    for place in sorted({h.place for h in gone}):
        mine = [h for h in gone if h.place == place]
        folder = mine[0].folder
        for h in mine:
            (folder / "videos" / h.name).unlink(missing_ok=True)
            shutil.rmtree(h.clips / "frames" / h.key, ignore_errors=True)
        if place.startswith("pool/"):
            if _purge_batch(folder, mine, record):
                removed.append(place)
        else:
            reasons = json.loads((folder / "reasons.json").read_text())
            for h in mine:
                shutil.rmtree(h.clips, ignore_errors=True)
                reasons["videos"][h.name].update(part=None, clips=0, purged=record)
            write_json(folder / "reasons.json", reasons, sort_keys=False)
    commit = None
    if version and any(p.startswith("pool/") for p in {h.place for h in gone}):
        _, commit = version_pool(Path(pool), f"ingest: purge {len(gone)} videos of one person, by {by}: {why}")
    return {"videos": listed, "batches_removed": removed, "commit": commit, "dry_run": False}


def _purge_batch(folder: Path, mine: list[Held], record: dict) -> bool:
    """Drop `mine` from a pool batch's tables and batch.json; remove the batch when nothing is left (True)."""
    keys = {h.key for h in mine}
    batch = json.loads((folder / "batch.json").read_text())
    left = [v for v in batch["videos"] if v not in {h.name for h in mine}]
    if not left:
        shutil.rmtree(folder)
        return True
    clips_dir = folder / "clips"
    videos = pd.read_parquet(clips_dir / "videos.parquet")
    clips = pd.read_parquet(clips_dir / "clips.parquet")
    write_parquet(clips_dir / "clips.parquet", clips[~clips["video_key"].isin(keys)])
    write_parquet(clips_dir / "videos.parquet", videos[~videos["key"].isin(keys)])
    _, stats = source(folder.name, clips_dir)
    batch["purged"] = [*batch.get("purged", []), {**record, "videos": sorted(h.name for h in mine)}]
    batch.update(videos=left, clips=stats["clips"], identities=stats["identities"], hours=stats["hours"])
    for h in mine:
        (batch.get("notes") or {}).pop(h.name, None)
    write_json(folder / "batch.json", batch, sort_keys=False)
    return False
