"""New video batches, decided video by video: stage what is in the inbox, extract each video on its own, gate each
video (Great Expectations), check the passing ones for drift (Evidently), then accept them into the training pool
and quarantine the others, each with reasons that name the file and the figure. A person can release quarantined
videos later (`clpau ingest release`), through the same guards. The Prefect flow `flows/ingest.py` calls these
functions one task each; every step also works without Prefect.

Layout (params.yaml: flows):
    inbox/                          users drop videos here
    batches/<batch>/videos/         a staged batch (moved out of the inbox, so late arrivals wait for the next run)
    batches/<batch>/parts/<part>/   one extract output per video (a task each; retried alone when it fails)
    batches/<batch>/reports/        GX data docs + validation.json, Evidently drift.html + drift.json
    pool/<batch>/                   accepted videos: videos/, clips/ (their extract output, merged; the `trainset`
                                    stage reads it), batch.json; then `dvc add pool` + a git commit of pool.dvc
    pool/<batch>-r<k>/              videos released from quarantine (batch.json says who released them and why)
    quarantine/<batch>/             videos/, parts/ (their extract outputs, kept for a release), reasons.json

Triage (docs/operations.md):
- per video: the quality gate's row checks (a face in enough frames, frame rate, the share of its clips that fail
  a clip check), an evaluation subject of the labelled benchmark, a video the pool already holds, a second copy
  of a file in this batch;
- per batch: most videos give no face clip at all, no clip at all, or a batch name already taken: then every video
  is quarantined and the reason says it is the batch's;
- drift is measured on the videos that passed, against the promoted model's training set; `drift.action: retrain`
  accepts them and marks the batch `retrain_due` (the flow starts a retrain run), `hold` quarantines them for review.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from clpau.config import Params
from clpau.core.fileio import write_json, write_parquet
from clpau.core.params import BenchmarkParams
from clpau.ops import sync
from clpau.ops.trainset import benchmark_overlap, pool_batches, source
from clpau.ops.validate import video_table
from clpau.video.extract import VIDEO_EXTENSIONS, run_extract

ACCEPTED, QUARANTINED, HELD = "accepted", "quarantined", "held"


class ReleaseError(ValueError):
    """A release that must not happen (unknown batch or video, a guard refuses it); nothing was moved."""


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


def part_name(video: Path) -> str:
    """A video's part folder: its stem, plus a short hash of its path (two `a.mp4` in different subfolders)."""
    return f"{Path(video).stem}.{hashlib.sha1(str(video).encode()).hexdigest()[:6]}"


def extract_one(video: Path, parts_dir: Path, params: Params) -> Path:
    """One video's extract output in its own folder (so videos can run on different workers)."""
    out = Path(parts_dir) / part_name(video)
    run_extract([video], out, params.extract, workers=1, identity_rule="stem", progress=False)
    return out


def read_parts(parts: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The videos and clips tables of several single-video extract outputs, read as one."""
    videos = [pd.read_parquet(Path(p) / "videos.parquet") for p in parts]
    clips = [pd.read_parquet(Path(p) / "clips.parquet") for p in parts]
    clips = [c for c in clips if len(c)] or clips[:1]  # an empty table still carries the columns
    return (pd.concat(videos, ignore_index=True) if videos else pd.DataFrame(),
            pd.concat(clips, ignore_index=True) if clips else pd.DataFrame())


def merge_extracts(parts: list[Path], out: Path) -> Path:
    """Merge single-video extract outputs into one (tables concatenated, frame folders moved)."""
    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    videos, clips = read_parts(parts)
    for part in map(Path, parts):
        for key in pd.read_parquet(part / "videos.parquet")["key"].dropna():
            src = part / "frames" / key
            if src.exists() and not (out / "frames" / key).exists():
                shutil.move(str(src), out / "frames" / key)
    write_parquet(out / "videos.parquet", videos)
    write_parquet(out / "clips.parquet", clips)
    return out


def pool_hashes(pool: Path) -> dict[str, str]:
    """{sha256: batch} of every video the pool holds."""
    seen = {}
    for b in pool_batches(pool):
        v = Path(b) / "clips" / "videos.parquet"
        if v.exists():
            seen.update({h: b.name for h in pd.read_parquet(v, columns=["sha256"])["sha256"].dropna()})
    return seen


def guards(videos: pd.DataFrame, pool: Path, bench: BenchmarkParams, face_threshold: float | None = None
           ) -> dict[str, list[str]]:
    """{video: reasons} for the videos that must not enter the pool whatever their quality: evaluation subjects of
    the labelled benchmark (by file, name or face), videos the pool already holds (by sha256). Keys: the extract's
    `video` column."""
    reasons: dict[str, list[str]] = {}
    for video, why in benchmark_overlap(videos, bench, face_threshold).items():
        reasons.setdefault(video, []).append(f"evaluation subject: {why}")
    seen = pool_hashes(pool)
    for video, sha in zip(videos["video"], videos["sha256"], strict=True):
        if sha and sha in seen:
            reasons.setdefault(video, []).append(
                f"already accepted: {Path(str(video)).name} came into the pool with batch {seen[sha]}")
    return reasons


def decide(validation: dict, keys: dict[str, str], guarded: dict[str, list[str]], batch_refused: list[str],
           videos: pd.DataFrame) -> dict:
    """Each video's verdict and reasons. `keys`: the batch's name of each video -> its key in the validation and
    the guards (the extract's `video` column); `videos`: the extract's videos table (figures for the report)."""
    batch_reasons = list(batch_refused) + [f"batch: {r}" for r in validation["batch_failed"]]
    rows = videos.assign(face_share=video_table(videos)["face_share"]).set_index("video")
    verdicts = {}
    for name, key in keys.items():
        own = list(validation["per_video"].get(key, [])) + guarded.get(key, [])
        if batch_reasons and not own:
            own = ["held back with its batch: " + "; ".join(batch_reasons)]
        row = rows.loc[key] if key in rows.index else None
        verdicts[name] = {"verdict": QUARANTINED if own else ACCEPTED, "reasons": own,
                          "face_share": round(float(row["face_share"]), 4) if row is not None else 0.0,
                          "clips": int(row["n_clips"]) if row is not None and pd.notna(row["n_clips"]) else 0,
                          # what an accepted video's decision must still say: a cut-short file is used as far as
                          # it decodes ("truncated: used 228 of an expected 472 frames")
                          "notes": [f"{name}: {row['error']}"] if row is not None and row["status"] == "truncated"
                          else []}
    return {"batch_reasons": batch_reasons, "videos": verdicts, "drift": None}


def with_verdict(decision: dict, verdict: str) -> list[str]:
    return [v for v, d in decision["videos"].items() if d["verdict"] == verdict]


def apply_drift(decision: dict, drift: dict | None, action: str) -> dict:
    """Record the drift check of the passing videos; with `action: hold` a drifted batch's passing videos are
    held for review, with `retrain` they stay accepted and the batch is due for retraining."""
    if drift is None:
        return decision
    decision["drift"] = {"drift": drift["drift"], "drifted_share": drift["drifted_share"],
                         "threshold": drift["threshold"], "drifted_columns": drift["drifted_columns"],
                         "videos": drift.get("videos"), "reference": drift.get("reference"), "action": action}
    if drift["drift"] and action == "hold":
        why = (f"drift: {drift['drifted_share']:.0%} of the columns drifted against the training set "
               f"({', '.join(drift['drifted_columns'])}; threshold {drift['threshold']:.0%}): held for review "
               f"(drift.action: hold; `clpau ingest release BATCH` puts it in the pool)")
        for v in with_verdict(decision, ACCEPTED):
            decision["videos"][v].update(verdict=HELD, reasons=[why])
    return decision


def flat_reasons(decision: dict) -> list[str]:
    """Every reason once, the batch's first."""
    out = list(decision["batch_reasons"])
    for d in decision["videos"].values():
        out += [r for r in d["reasons"] if r not in out and not r.startswith("held back with its batch")]
    return out


def _move_videos(src_root: Path, dest_root: Path, names: list[str]) -> None:
    for v in names:
        dest = dest_root / v
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src_root / v), dest)


def _publish_batch(pool: Path, name: str, names: list[str], parts: list[Path], record: dict,
                   version: bool, message: str) -> dict:
    """pool/<name>/{videos,clips,batch.json} from a staged folder of videos and their parts; batch.json is
    written last (a folder without it is no batch: an interrupted move leaves nothing the trainset reads)."""
    dest = Path(pool) / name
    clips = merge_extracts(parts, dest / "clips")
    _, stats = source(name, clips)
    record = {"batch": name, "videos": sorted(names), "clips": stats["clips"], "identities": stats["identities"],
              "hours": stats["hours"], **record}
    write_json(dest / "batch.json", record, sort_keys=False)
    versioned, commit = version_pool(Path(pool), message.format(n=len(names), clips=stats["clips"])) \
        if version else (False, None)
    return {"pool": str(dest), "videos": record["videos"], "clips": record["clips"], "dvc_versioned": versioned,
            "commit": commit}


def accept(batch_dir: Path, pool: Path, decision: dict, parts: dict[str, Path], version: bool = True) -> dict:
    """Move the accepted videos and their extract outputs into pool/<batch>, write batch.json (with the drift
    figures and `retrain_due`) and, in a DVC repo, `dvc add` the pool (one new version) and commit its pointer."""
    batch_dir, pool = Path(batch_dir), Path(pool)
    names = with_verdict(decision, ACCEPTED)
    _move_videos(batch_dir / "videos", pool / batch_dir.name / "videos", names)
    drift = decision.get("drift")
    record = {"accepted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "quarantined": sorted(set(decision["videos"]) - set(names)),
              "notes": {v: decision["videos"][v]["notes"] for v in names if decision["videos"][v].get("notes")},
              "drift": drift, "retrain_due": bool(drift and drift["drift"]), "reports": str(batch_dir / "reports")}
    return _publish_batch(pool, batch_dir.name, names, [parts[v] for v in names], record, version,
                          f"ingest: accept batch {batch_dir.name} ({{n}} videos, {{clips}} clips)")


def version_pool(pool: Path, message: str) -> tuple[bool, str | None]:
    """In a DVC repo: `dvc add` the pool and commit its pointer; (versioned, commit)."""
    root = dvc_root(pool)
    if root is None:
        return False, None
    target = pool.resolve().relative_to(root)
    sync.run(root, sys.executable, "-m", "dvc", "add", "-q", str(target))
    pointer = target.with_name(target.name + ".dvc")
    return True, sync.commit(root, [str(pointer), str(target.parent / ".gitignore")], message)


def dvc_root(path: Path) -> Path | None:
    """The DVC repo that holds `path`, if any."""
    for d in [path.resolve(), *path.resolve().parents]:
        if (d / ".dvc").is_dir():
            return d
    return None


def quarantine(batch_dir: Path, quarantine_dir: Path, decision: dict, parts: dict[str, Path]) -> dict:
    """Move every video not accepted, and its extract output, to quarantine/<batch>; reasons.json says why, per
    video."""
    batch_dir = Path(batch_dir)
    dest = Path(quarantine_dir) / batch_dir.name
    names = [v for v, d in decision["videos"].items() if d["verdict"] != ACCEPTED]
    _move_videos(batch_dir / "videos", dest / "videos", names)
    videos = {}
    for v in names:
        part = parts.get(v)
        kept = None
        if part is not None and Path(part).exists():
            kept = dest / "parts" / Path(part).name
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(part), kept)
        videos[v] = {**decision["videos"][v], "part": str(kept.relative_to(dest)) if kept else None}
    record = {"batch": batch_dir.name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "batch_reasons": decision["batch_reasons"], "drift": decision.get("drift"), "videos": videos,
              "reasons": flat_reasons(decision)}
    write_json(dest / "reasons.json", record, sort_keys=False)
    return {"quarantine": str(dest), "quarantined": names}


def pool_notes(pool: Path) -> dict[str, dict[str, list[str]]]:
    """{batch: {video: notes}} of the pool's batches whose accepted videos carry notes (a truncated file)."""
    out = {}
    for b in pool_batches(pool):
        notes = json.loads((b / "batch.json").read_text()).get("notes") or {}
        if notes:
            out[b.name] = notes
    return out


def quarantined(quarantine_dir: Path) -> dict[str, dict]:
    """{batch: reasons.json} of every quarantined batch."""
    q = Path(quarantine_dir)
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(q.glob("*/reasons.json"))} if q.is_dir() else {}


def release(quarantine_dir: Path, pool: Path, batch: str, videos: list[str] | None, by: str | None, why: str,
            bench: BenchmarkParams, version: bool = True, face_threshold: float | None = None) -> dict:
    """Move quarantined videos a person approved into the pool as batch `<batch>-r<k>`, through the guards that
    no decision may skip (evaluation subjects, videos the pool already holds); batch.json records who released
    them, why, and the reasons they were held. Raises ReleaseError, moving nothing, when a video is unknown, has no
    face clip to train on, or a guard refuses it."""
    if not why or not why.strip():
        raise ReleaseError("a release needs a reason (--reason): it is recorded in batch.json")
    qdir = Path(quarantine_dir) / batch
    if not (qdir / "reasons.json").exists():
        known = ", ".join(quarantined(quarantine_dir)) or "none"
        raise ReleaseError(f"no quarantined batch {batch!r} in {quarantine_dir} (quarantined batches: {known})")
    record = json.loads((qdir / "reasons.json").read_text())
    waiting = {v: d for v, d in record["videos"].items() if not d.get("released")}
    chosen = list(videos) if videos else sorted(waiting)
    unknown = [v for v in chosen if v not in waiting]
    if unknown:
        raise ReleaseError(f"not waiting in quarantine/{batch}: {', '.join(unknown)} (waiting: "
                           f"{', '.join(sorted(waiting)) or 'nothing'})")
    no_clips = [f"{v}: no face clip to train on ({'; '.join(waiting[v]['reasons'])})" for v in chosen
                if not waiting[v].get("part") or not waiting[v].get("clips")]
    if no_clips:
        raise ReleaseError("nothing released: " + " | ".join(no_clips))
    parts = {v: qdir / waiting[v]["part"] for v in chosen}
    table, _ = read_parts(list(parts.values()))
    refused = [r for rs in guards(table, pool, bench, face_threshold).values() for r in rs]
    if refused:
        raise ReleaseError("nothing released, a guard refuses it: " + " | ".join(refused))
    k = 1 + sum(1 for p in Path(pool).glob(f"{batch}-r*") if (p / "batch.json").exists())
    name = f"{batch}-r{k}"
    by = by or getpass.getuser()
    _move_videos(qdir / "videos", Path(pool) / name / "videos", chosen)
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result = _publish_batch(pool, name, chosen, list(parts.values()),
                            {"released": when, "released_from": f"quarantine/{batch}", "released_by": by,
                             "release_reason": why, "held_for": {v: waiting[v]["reasons"] for v in chosen},
                             "drift": record.get("drift"), "retrain_due": True},
                            version, f"ingest: release {{n}} videos of batch {batch} into {name} ({{clips}} clips), "
                                     f"by {by}: {why}")
    for v in chosen:
        record["videos"][v]["released"] = {"to": name, "by": by, "reason": why, "time": when}
    write_json(qdir / "reasons.json", record, sort_keys=False)
    return {"batch": name, "released_by": by, **result}
