"""Clip tables: the clips of extract outputs and clip stores, a clip's reach along its face track, and the
landmarks and landmark motion of its frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from clpau.data.jpeg_store import STORE_PREFIXES, JpegStore, is_store


def track_reach(clips: pd.DataFrame) -> np.ndarray:
    """Frames from each clip's start to the end of its face track: extract's clips overlap (`clip_stride` <
    `clip_len`), and a clip that overlaps the next one at the same shard row per frame lies on the same track (a row
    holds one face), so the track continues through it. Lets a clip span longer than extract's clip_len be read."""
    key = ["shard_path", "start_row", "start_frame", "n_frames"]
    if clips.duplicated(key).any():  # the same frames listed twice (e.g. as other people): one chain for all copies
        unique = clips[key].drop_duplicates().reset_index(drop=True)
        unique["reach"] = track_reach(unique)
        return clips[key].merge(unique, on=key, how="left")["reach"].to_numpy()
    df = clips.reset_index(drop=True)
    reach = df["n_frames"].to_numpy().astype(np.int64).copy()
    order = df.sort_values(["shard_path", "start_row"]).index.to_numpy()
    end = df["start_row"].to_numpy() + reach
    for k in range(len(order) - 2, -1, -1):  # backwards: a clip reaches as far as the clip it continues into
        i, j = order[k], order[k + 1]
        same_track = (df.at[i, "shard_path"] == df.at[j, "shard_path"]
                      and df.at[j, "start_row"] - df.at[i, "start_row"] == df.at[j, "start_frame"] - df.at[i, "start_frame"]
                      and df.at[i, "start_row"] < df.at[j, "start_row"] < end[i])
        if same_track:
            end[i] = max(end[i], end[j])
            reach[i] = end[i] - df.at[i, "start_row"]
    return reach


def clip_table(root: Path | str, cache_dir: Path | str | None = None) -> Path:
    """The clips.parquet of an extract output folder or a clip store (a streamed store's fetched into the cache)."""
    return JpegStore(root, cache_dir).file("clips.parquet") if is_store(root) else Path(root) / "clips.parquet"


def load_clips(roots: list[Path | str], span: int, cache_dir: Path | str | None = None) -> pd.DataFrame:
    """Clips of every extract output folder or clip store (`is_store`) that hold at least `span` frames. Their
    `shard_path` says where the frames are: an absolute shard path, or `<store>::<shard>` with the first frame's
    item in `store_row` (-1 for shards). A clip shorter than `span` counts with the frames of its face track that
    follow it (`track_reach`), so a span longer than extract's clip_len (e.g. 8 frames at stride 4) needs no new
    extraction."""
    parts = []
    for root in roots:
        if is_store(root):
            df = pd.read_parquet(clip_table(root, cache_dir))
            _refuse_a_stale_store(root, df)
            df["shard_path"] = [f"{root}::{s}" for s in df["shard"]]
            df["store"] = str(root)
            parts.append(df)
            continue
        root = Path(root)
        table = root / "clips.parquet"
        if not table.exists():
            raise FileNotFoundError(f"{table} is missing: run `clpau extract … --out {root}` first")
        df = pd.read_parquet(table)
        df["shard_path"] = [str(root / s) for s in df["shard"]]
        df["store"], df["store_row"] = "", -1
        parts.append(df)
    clips = pd.concat(parts, ignore_index=True)
    if span > clips["n_frames"].min():
        clips["n_frames"] = np.where(clips["n_frames"] >= span, clips["n_frames"], track_reach(clips))
    clips = clips[clips["n_frames"] >= span].reset_index(drop=True)
    if clips.empty:
        raise ValueError(f"no clip of {span} or more frames in {', '.join(map(str, roots))}")
    return clips


def _refuse_a_stale_store(root: Path | str, clips: pd.DataFrame) -> None:
    """A store folder is not a stage's output (`clpau store` writes it when asked, docs/scale.md), so nothing reruns
    it when its sources change: a store whose sources, where they are here, now hold other clips is refused."""
    if str(root).startswith(STORE_PREFIXES):
        return  # a streamed store's sources are on the machine that wrote it
    sources = [Path(s) for s in json.loads((Path(root) / "store.json").read_text()).get("sources", [])]
    tables = [s / "clips.parquet" for s in sources]
    if not sources or not all(t.is_file() for t in tables):
        return
    now = set().union(*(pd.read_parquet(t, columns=["clip_id"])["clip_id"] for t in tables))
    if now != set(clips["clip_id"]):
        raise ValueError(f"the clip store {root} is older than its sources ({', '.join(map(str, sources))}: "
                         f"{len(now)} clips now, {len(clips)} in the store, {len(now - set(clips['clip_id']))} "
                         f"new): write it again with `clpau store`")


INNER_LANDMARKS = slice(17, 68)  # brows, nose, eyes, mouth: the jaw line follows head pose and speech more than AUs


def crop_landmarks(shard_path: str | Path) -> np.ndarray:
    """(rows, 68, 2) dlib landmarks of a shard's face rows in its crops' coordinates, as shares of the crop side
    (from the index.parquet beside the shard: landmarks in frame pixels and each frame's frame->crop affine)."""
    shard_path = Path(shard_path)
    index = pd.read_parquet(shard_path.with_name("index.parquet"), columns=["row", "landmarks", "affine"])
    index = index[index["row"] >= 0].sort_values("row")
    lm = np.stack(index["landmarks"].to_numpy()).reshape(-1, 68, 2)
    aff = np.stack(index["affine"].to_numpy()).reshape(-1, 2, 3)
    crop = np.einsum("nij,nkj->nki", aff[:, :, :2], lm) + aff[:, None, :, 2]
    side = np.load(shard_path, mmap_mode="r").shape[1]
    return (crop / side).astype(np.float32)


def landmark_motion(lm: np.ndarray) -> np.ndarray:
    """(T, T) mean distance between the inner landmarks of every two of T frames ((T, 68, 2) crop-space landmarks):
    how much the face itself moved between them, after alignment."""
    p = lm[:, INNER_LANDMARKS]
    return np.linalg.norm(p[:, None] - p[None, :], axis=-1).mean(-1)
