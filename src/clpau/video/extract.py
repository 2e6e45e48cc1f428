"""Stage `extract`: videos -> aligned face clips (the contract between stages: docs/data.md).

Output folder::

    videos.parquet            one row per input: status, error, frames, face_frames, fps, size, sha256, ...,
                              descriptor (the followed person's face descriptor), other_faces (core/faces.py)
    clips.parquet             one row per clip: clip_id, video, identity, start_frame, n_frames, shard, start_row, QC
    frames/<key>/faces.npy    uint8 (N, S, S, 3) aligned crops of the followed face, memory-mappable
    frames/<key>/index.parquet one row per decoded frame: frame, timestamp, face, row in faces.npy, landmarks, ...
    frames/<key>/video.json   the video's result; written last, so its presence means "this video is done"

`<key>` is the first 16 hex digits of the file's sha256: a rerun skips videos whose result exists for the same
content and parameters and redoes interrupted ones. Work is split into (video, keyframe-aligned chunk) tasks run by
a process pool, because dlib is single-threaded; results are merged per video in input order, so the output does not
depend on the number of workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import queue as queue_mod
import shutil
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from clpau.core import faces
from clpau.core.fileio import (
    atomic_path,
    hash_modules,
    remove_stale_tmp,
    sha256_file,
    write_json,
    write_parquet,
)
from clpau.core.hardware import usable_cpus
from clpau.video import chunk
from clpau.video.chunk import ChunkResult, ChunkTask, process_chunk
from clpau.video.decode import VideoError, probe
from clpau.video.params import ExtractParams

VIDEO_EXTENSIONS = {".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
                    ".ts", ".mts", ".m2ts", ".ogv"}
SUCCESS = ("ok", "multiple_faces", "truncated")
FORMAT_VERSION = 3  # bump when the output layout changes: cached results are then redone
# the folders whose modules make a video's result (the DVC stage's code deps): changing any of them redoes cached videos —
# else `dvc repro` reruns the stage after a code change and its persisted outputs come back unchanged
CODE = ("core", "video")


# ---------------------------------------------------------------------------------------------- inputs


def expand_inputs(inputs: list[Path | str]) -> list[Path]:
    """Files given are taken as they are (bad ones get a status); folders are searched for video files."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
        else:
            out.append(p)
    return out


def display_path(p: Path) -> str:
    try:
        return os.path.relpath(p)
    except ValueError:
        return str(p)


def identity_of(p: Path, rule: str) -> str:
    if rule == "parent":
        return p.parent.name
    if rule == "prefix":
        return p.stem.split("_")[0]
    return p.stem


def code_digest() -> str:
    h = hashlib.sha256()
    hash_modules(h, CODE)
    return h.hexdigest()[:16]


def fingerprint(params: ExtractParams) -> str:
    """What a cached per-video result depends on (not workers, inputs or out_dir): params, format and code."""
    relevant = params.model_dump(mode="json", exclude={"workers", "inputs", "out_dir"})
    relevant["format"] = FORMAT_VERSION
    relevant["code"] = code_digest()
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def plan_chunks(keyframes: list[int], n_packets: int, chunk_frames: int) -> list[tuple]:
    """Split at keyframes into about n_packets / chunk_frames (start_pts, end_pts) ranges (None = open end)."""
    want = round(n_packets / chunk_frames)
    if want <= 1 or len(keyframes) <= 1:
        return [(None, None)]
    # keyframes are roughly uniform in time: take the ones nearest to even splits of the keyframe span
    lo, hi = keyframes[0], keyframes[-1]
    span = max(hi - lo, 1) * len(keyframes) / (len(keyframes) - 1)
    cuts = sorted({min(keyframes[1:], key=lambda k, t=lo + span * i / want: abs(k - t)) for i in range(1, want)})
    bounds = [None, *cuts, None]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


# ---------------------------------------------------------------------------------------------- worker side

# ---------------------------------------------------------------------------------------------- merging


@dataclass
class VideoJob:
    index: int
    path: Path
    name: str
    sha256: str = ""
    key: str = ""
    info: object = None
    chunks: list[tuple] = field(default_factory=list)
    results: dict[int, ChunkResult] = field(default_factory=dict)
    retried: set[int] = field(default_factory=set)

    def shard_tmp(self, out: Path, index: int) -> Path:
        return out / "frames" / self.key / f"chunk-{index:04d}.npy.tmp"


VIDEO_COLUMNS = ["video", "status", "error", "frames", "face_frames", "fps", "width", "height", "sha256", "key",
                 "duration", "rotation", "max_faces", "n_clips", "descriptor", "descriptor_frames", "other_faces"]
# no timings: the same input gives the same bytes. descriptor (128 floats or null), descriptor_frames, other_faces
# (a list of descriptors): who is in the video (core/faces.py) — biometric data, kept here and nowhere else


def _row(job: VideoJob, status: str, error: str = "", **extra) -> dict:
    info = job.info
    row = {
        "video": job.name, "status": status, "error": error, "frames": 0, "face_frames": 0,
        "fps": float(info.fps) if info else np.nan, "width": int(info.width) if info else 0,
        "height": int(info.height) if info else 0, "sha256": job.sha256, "key": job.key,
        "duration": float(info.duration) if info else np.nan, "rotation": 0, "max_faces": 0, "n_clips": 0,
        "descriptor": None, "descriptor_frames": 0, "other_faces": [],
    }
    row.update(extra)
    return row


def finalize_video(job: VideoJob, out: Path, params: ExtractParams, identity_rule: str) -> tuple[dict, pd.DataFrame]:
    """Merge a video's chunk results into its shard, index and clips; return (videos row, clips)."""
    parts = [job.results[i] for i in sorted(job.results)]
    failed = [r for r in parts if r.failure]
    folder = out / "frames" / job.key
    if failed:
        return _row(job, "error", f"extraction failed: {failed[0].failure}", traceback=failed[0].traceback), \
            pd.DataFrame()
    pts = np.concatenate([r.pts for r in parts])
    n = len(pts)
    decode_error = next((r.decode_error for r in parts if r.decode_error), None)
    rotation, scale = parts[0].rotation, parts[0].scale
    max_faces = max(r.max_faces for r in parts)
    common = {"frames": n, "rotation": rotation, "max_faces": max_faces}
    if n == 0:
        return _row(job, "unreadable", decode_error or "no frame could be decoded", **common), pd.DataFrame()
    bad = np.flatnonzero(np.diff(pts) <= 0)
    if len(bad):  # a merge bug, never a property of the file: the row says "error" and the batch goes on
        raise RuntimeError(f"chunks overlap or are out of order: {len(bad)} of {n} frames, first at frame {bad[0] + 1}")
    face = np.concatenate([r.face for r in parts])
    hist_diff = np.concatenate([r.hist_diff for r in parts])
    for i in range(1, len(parts)):  # the first frame of each later chunk: compare with the end of the one before
        start = sum(len(r.pts) for r in parts[:i])
        if start < n and parts[i].first_hist is not None and parts[i - 1].last_hist is not None:
            hist_diff[start] = 0.5 * float(np.abs(parts[i].first_hist - parts[i - 1].last_hist).sum())
    n_face = int(face.sum())
    trunc_msg = decode_error or job.info.truncated
    truncated = trunc_msg is not None
    if n_face == 0:
        tiny = [r.tiny_face_px for r in parts if r.tiny_face_px]
        if tiny:
            return _row(job, "face_too_small",
                        f"faces of about {max(tiny) / scale:.0f} px found only with upsampling; the minimum is "
                        f"{params.min_face_px} px (extract.min_face_px)", **common), pd.DataFrame()
        msg = f"no face found in {n} frames" + (f" ({trunc_msg})" if truncated else "")
        return _row(job, "no_face", msg, **common), pd.DataFrame()

    # the one shard: the chunks' crops in frame order (a single chunk's file is simply renamed)
    shard = folder / "faces.npy"
    with_faces = [i for i, r in enumerate(parts) if r.n_faces]
    if len(with_faces) == 1:
        os.replace(job.shard_tmp(out, with_faces[0]), shard)
    else:
        s = params.crop_size
        with atomic_path(shard) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n_face, s, s, 3))
            at = 0
            for i in with_faces:
                part = np.load(job.shard_tmp(out, i), mmap_mode="r")
                arr[at:at + len(part)] = part
                at += len(part)
            arr.flush()
            del arr
    for i in range(len(parts)):
        job.shard_tmp(out, i).unlink(missing_ok=True)

    row_of = np.full(n, -1, np.int64)
    row_of[face] = np.arange(n_face)
    box = np.concatenate([r.box for r in parts]) / scale
    lm = np.concatenate([r.landmarks for r in parts]) / scale
    aff = np.concatenate([r.affine for r in parts])
    aff[:, :, :2] *= scale  # frame->crop matrices expressed in original (upright) pixel coordinates
    score = np.concatenate([r.score for r in parts])
    brightness = np.concatenate([r.brightness for r in parts])
    sharpness = np.concatenate([r.sharpness for r in parts])
    t0 = pts.min()
    timestamps = (pts - t0) * job.info.time_base
    index = pd.DataFrame({
        "frame": np.arange(n), "pts": pts, "timestamp": timestamps, "face": face, "row": row_of,
        "det_score": score, "box_x0": box[:, 0], "box_y0": box[:, 1], "box_x1": box[:, 2], "box_y1": box[:, 3],
        "brightness": brightness, "sharpness": sharpness, "hist_diff": hist_diff,
        "landmarks": list(lm.reshape(n, -1)), "affine": list(aff.reshape(n, -1)),
    })
    write_parquet(folder / "index.parquet", index)

    clips = cut_clips(job, index, lm, aff, params, identity_rule)
    write_parquet(folder / "clips.parquet", clips)
    if truncated:  # usable, and every decision about it says how much of it was used
        expected = f" of an expected {job.info.declared_frames}" if job.info.declared_frames > n else ""
        status, error = "truncated", f"truncated: used {n}{expected} frames ({trunc_msg})"
    elif len(clips) == 0:
        status, error = "too_short", (f"no run of {params.clip_len} consecutive face frames "
                                      f"(extract.clip_len); {n_face} face frames in all")
    elif max_faces > 1:
        status, error = "multiple_faces", f"up to {max_faces} faces in a frame; followed the largest one"
    else:
        status, error = "ok", ""
    notes = []
    if scale != 1.0:
        notes.append(f"downscaled from {job.info.width}x{job.info.height} for processing (extract.max_side)")
    if rotation:
        notes.append(f"rotated by {rotation} degrees (rotation metadata)")
    if notes:
        error = "; ".join([error, *notes] if error else notes)
    who = faces.summarise(np.concatenate([r.person for r in parts]), np.concatenate([r.others for r in parts]),
                          params.identity_threshold)
    row = _row(job, status, error, face_frames=n_face, n_clips=len(clips), **common, **who)
    return row, clips


def cut_clips(job: VideoJob, index: pd.DataFrame, lm: np.ndarray, aff: np.ndarray, params: ExtractParams,
              identity_rule: str) -> pd.DataFrame:
    """Clips of clip_len consecutive face frames, never across a lost face, a shot change or a jump."""
    face = index["face"].to_numpy()
    n = len(face)
    cx = ((index["box_x0"] + index["box_x1"]) / 2).to_numpy()
    cy = ((index["box_y0"] + index["box_y1"]) / 2).to_numpy()
    w = (index["box_x1"] - index["box_x0"]).to_numpy()
    brk = np.ones(n, bool)  # brk[i]: a clip may not contain both frame i-1 and frame i
    with np.errstate(invalid="ignore"):
        jump = np.hypot(np.diff(cx), np.diff(cy)) / np.maximum(w[1:], 1.0)
        brk[1:] = ~face[1:] | ~face[:-1] | (index["hist_diff"].to_numpy()[1:] > params.shot_change) | \
            ~(jump <= params.max_jump)
    # crop-space landmarks: jitter is measured after alignment, in crop pixels
    crop_lm = np.einsum("nij,nkj->nki", aff[:, :, :2], lm) + aff[:, None, :, 2]
    rows = []
    L, stride = params.clip_len, params.clip_stride
    identity = identity_of(job.path, identity_rule)
    seg_start = 0
    for i in range(1, n + 1):
        if i < n and not brk[i]:
            continue
        if face[seg_start]:
            for start in range(seg_start, i - L + 1, stride):
                sl = slice(start, start + L)
                second = crop_lm[start:start + L][2:] - 2 * crop_lm[start:start + L][1:-1] + crop_lm[start:start + L][:-2]
                rows.append({
                    "clip_id": f"{job.key}-{start:06d}", "video": job.name, "video_key": job.key,
                    "identity": identity, "start_frame": start, "n_frames": L,
                    "shard": f"frames/{job.key}/faces.npy", "start_row": int(index["row"].iat[start]),
                    "start_time": float(index["timestamp"].iat[start]), "fps": float(job.info.fps),
                    "det_score": float(index["det_score"].iloc[sl].mean()),
                    "face_size": float(w[sl].mean()),
                    "brightness": float(index["brightness"].iloc[sl].mean()),
                    "sharpness": float(index["sharpness"].iloc[sl].mean()),
                    "landmark_jitter": float(np.linalg.norm(second, axis=-1).mean()),
                })
        seg_start = i
    return pd.DataFrame(rows, columns=CLIP_COLUMNS)


# ---------------------------------------------------------------------------------------------- driver


@dataclass
class ExtractSummary:
    videos: pd.DataFrame
    clips: pd.DataFrame
    seconds: float
    frames: int  # frames decoded by this run (cached videos not counted)

    @property
    def succeeded(self) -> int:
        return int(self.videos["status"].isin(SUCCESS).sum()) if len(self.videos) else 0


def _cached(folder: Path, fp: str) -> dict | None:
    marker = folder / "video.json"
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("fingerprint") == fp else None


class Workers:
    """The processes that run chunks; reusable across `run_extract` calls (the benchmark keeps one warm).

    Workers are forked from a parent that has already loaded the dlib models, so they start in milliseconds and
    share the ~100 MB of model memory; where forking is unsafe (other threads running in the parent, e.g. under
    Prefect or Dask) they are spawned and load the models themselves. workers=1 runs chunks in this process.
    """

    def __init__(self, n: int, start_method: str | None = None):
        self.n = max(1, n)
        self._pool: ProcessPoolExecutor | None = None
        self._queue = None
        if start_method is None:
            start_method = "fork" if threading.active_count() == 1 and "fork" in mp.get_all_start_methods() else "spawn"
        self.start_method = start_method

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = mp.get_context(self.start_method)
            if self.start_method == "fork":
                chunk.preload_models()
            self._queue = ctx.Queue()
            self._pool = ProcessPoolExecutor(self.n, mp_context=ctx, initializer=chunk.init_worker,
                                             initargs=(self._queue,))
        return self._pool

    def run(self, tasks: list[ChunkTask], on_result, bar) -> None:
        """Run tasks; `on_result(result)` may return a follow-up task, which is queued."""
        if self.n == 1:
            self._run_inline(tasks, on_result, bar)
        else:
            self._run_pool(tasks, on_result, bar)

    @staticmethod
    def _run_inline(tasks, on_result, bar) -> None:
        chunk.preload_models()
        previous = chunk.set_progress(_BarSink(bar))
        try:
            queue = list(tasks)
            while queue:
                follow_up = on_result(process_chunk(queue.pop(0)))
                if follow_up is not None:
                    queue.append(follow_up)
        finally:
            chunk.set_progress(previous)

    def _run_pool(self, tasks, on_result, bar) -> None:
        queue = list(tasks)
        attempts: dict[tuple[int, int], int] = {}
        while queue:
            running: dict = {}
            try:
                pool = self._ensure_pool()
                while queue or running:
                    while queue and len(running) < self.n * 2:
                        t = queue.pop(0)
                        key = (t.video_index, t.chunk_index)
                        attempts[key] = attempts.get(key, 0) + 1
                        running[pool.submit(process_chunk, t)] = t
                    done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                    self._drain(bar)
                    for fut in done:
                        running.pop(fut)
                        follow_up = on_result(fut.result())
                        if follow_up is not None:
                            queue.append(follow_up)
                self._drain(bar)
            except BrokenProcessPool:
                # a worker died inside a native library: start a new pool and requeue what was running; a chunk
                # that breaks the pool twice is reported as failed instead of being retried forever
                self._pool = None
                for t in running.values():
                    key = (t.video_index, t.chunk_index)
                    if attempts.get(key, 0) >= 2:
                        crashed = ChunkResult(t.video_index, t.chunk_index,
                                              failure="the worker process crashed on this video (twice)")
                        follow_up = on_result(crashed)
                        if follow_up is not None:
                            queue.append(follow_up)
                    else:
                        queue.insert(0, t)

    def _drain(self, bar) -> None:
        n = 0
        with contextlib.suppress(queue_mod.Empty, OSError, ValueError):
            while True:
                n += self._queue.get_nowait()
        if n:
            bar.update(n)


class _BarSink:
    def __init__(self, bar):
        self.bar = bar

    def put(self, n: int) -> None:
        self.bar.update(n)


def run_extract(inputs: list[Path | str], out: Path | str, params: ExtractParams, *, workers: int | None = None,
                identity_rule: str = "stem", progress: bool = True, pool: Workers | None = None) -> ExtractSummary:
    """Extract every input into `out`; never raises for a bad video (it becomes a row with a status)."""
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out)
    # the top-level tables are rebuilt at the end: remove them now so a killed run leaves nothing that looks whole
    for name in ("videos.parquet", "clips.parquet"):
        (out / name).unlink(missing_ok=True)
    if pool is None:
        n = workers if workers is not None else params.workers
        with Workers(n or usable_cpus()) as own:
            return run_extract(inputs, out, params, identity_rule=identity_rule, progress=progress, pool=own)
    fp = fingerprint(params)

    jobs = [VideoJob(i, p, display_path(p)) for i, p in enumerate(expand_inputs(inputs))]
    rows: dict[int, dict] = {}
    clips: dict[int, pd.DataFrame] = {}
    pending: list[VideoJob] = []
    by_key: dict[str, VideoJob] = {}
    duplicates: list[tuple[VideoJob, VideoJob]] = []
    for job in jobs:
        try:
            job.info = probe(job.path)
            job.sha256 = sha256_file(job.path)
        except VideoError as err:
            rows[job.index] = _row(job, err.status, str(err))
            continue
        except OSError as err:
            rows[job.index] = _row(job, "unreadable", f"cannot read the file: {err}")
            continue
        job.key = job.sha256[:16]
        if job.key in by_key:  # the same content given twice: do the work once
            duplicates.append((job, by_key[job.key]))
            continue
        by_key[job.key] = job
        folder = out / "frames" / job.key
        record = _cached(folder, fp)
        if record is not None:
            rows[job.index] = {**record["row"], "video": job.name}
            part = folder / "clips.parquet"
            clips[job.index] = _relabel(pd.read_parquet(part), job, identity_rule) if part.exists() else pd.DataFrame()
            continue
        if folder.exists():  # an interrupted earlier attempt: start this video afresh
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        job.chunks = plan_chunks(job.info.keyframe_pts, job.info.n_packets, params.chunk_frames)
        pending.append(job)

    _drop_stale_videos(out, set(by_key))
    bar = tqdm(total=sum(j.info.n_packets for j in pending), unit="frame", desc="extract", disable=not progress,
               dynamic_ncols=True, smoothing=0.1)
    by_index = {j.index: j for j in pending}

    def task(job: VideoJob, c: int, target=None) -> ChunkTask:
        s, e = job.chunks[c]
        share = -(-params.descriptor_samples // len(job.chunks))  # the video's samples spread over its chunks
        return ChunkTask(job.index, c, str(job.path), s, e, str(job.shard_tmp(out, c)), params, target, share)

    def on_result(res: ChunkResult) -> ChunkTask | None:
        job = by_index[res.video_index]
        job.results[res.chunk_index] = res
        if len(job.results) < len(job.chunks):
            return None
        # a chunk that locked on someone other than the video's first face is redone, told whom to follow
        retry = _identity_retry(job, params)
        if retry is not None:
            job.retried.add(retry)
            del job.results[retry]
            return task(job, retry, target=_reference_descriptor(job))
        try:
            rows[job.index], clips[job.index] = finalize_video(job, out, params, identity_rule)
        except Exception as err:  # noqa: BLE001 - a merge bug in one video must not lose the batch
            rows[job.index] = _row(job, "error", f"merging failed: {err}", traceback=traceback.format_exc())
            clips[job.index] = pd.DataFrame()
        row = {k: v for k, v in rows[job.index].items() if k != "traceback"}
        if row["status"] != "error":  # errors are retried by the next run, everything else is final
            write_json(out / "frames" / job.key / "video.json", {"fingerprint": fp, "row": row})
        return None

    pool.run([task(j, c) for j in pending for c in range(len(j.chunks))], on_result, bar)
    bar.close()

    for job, original in duplicates:
        rows[job.index] = {**rows[original.index], "video": job.name}
        clips[job.index] = _relabel(clips.get(original.index, pd.DataFrame()), job, identity_rule)

    videos = pd.DataFrame([rows[i] for i in sorted(rows)], columns=VIDEO_COLUMNS)
    parts = [clips[i] for i in sorted(clips) if len(clips[i])]
    all_clips = pd.concat(parts, ignore_index=True) if parts else _empty_clips()
    write_parquet(out / "clips.parquet", all_clips)
    write_parquet(out / "videos.parquet", videos)  # last: its presence marks a finished run
    frames = int(sum(rows[j.index].get("frames", 0) for j in pending))
    return ExtractSummary(videos, all_clips, time.perf_counter() - t_start, frames)


def _drop_stale_videos(out: Path, keys: set[str]) -> None:
    """Remove the frame folders of videos that are not among this run's inputs: the output persists between runs
    (an interrupted run resumes), and without this an older input set's shards would stay in it, versioned by DVC
    with the rest, though no table lists them."""
    frames = out / "frames"
    if frames.is_dir():
        for folder in frames.iterdir():
            if folder.name not in keys:
                shutil.rmtree(folder) if folder.is_dir() else folder.unlink()


def _reference_descriptor(job: VideoJob):
    """Face descriptor of the person followed in the video's first chunk that found one."""
    return next((job.results[i].descriptor for i in sorted(job.results) if job.results[i].descriptor is not None),
                None)


def _identity_retry(job: VideoJob, params: ExtractParams) -> int | None:
    """The first chunk whose followed face is not the video's reference person (and was not redone yet)."""
    ref = _reference_descriptor(job)
    if ref is None:
        return None
    for i in sorted(job.results):
        d = job.results[i].descriptor
        if d is not None and i not in job.retried and np.linalg.norm(d - ref) >= params.identity_threshold:
            return i
    return None


def _relabel(df: pd.DataFrame, job: VideoJob, identity_rule: str) -> pd.DataFrame:
    if len(df):
        df = df.assign(video=job.name, identity=identity_of(job.path, identity_rule))
    return df


CLIP_COLUMNS = ["clip_id", "video", "video_key", "identity", "start_frame", "n_frames", "shard", "start_row",
                "start_time", "fps", "det_score", "face_size", "brightness", "sharpness", "landmark_jitter"]
_STR_COLS = {"clip_id", "video", "video_key", "identity", "shard"}
_INT_COLS = {"start_frame", "n_frames", "start_row"}


def _empty_clips() -> pd.DataFrame:
    """No clips, with the column types a non-empty table has (so readers need no special case)."""
    return pd.DataFrame({c: pd.Series(dtype="object" if c in _STR_COLS else "int64" if c in _INT_COLS
                                      else "float64") for c in CLIP_COLUMNS})
