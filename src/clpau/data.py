"""Clip dataset over `extract` output: T consecutive aligned frames, read by memory map, two augmented views.

Augmentations keep facial action intact: scale/translation jitter, colour, blur, rare greyscale — no horizontal
flip (AUs can be asymmetric and the labels would have to flip too). One crop, colour and blur is drawn per view and
clip and applied to all its T frames; on top, each frame gets its own small shift (`frame_jitter`, a share of the
crop side). The shift matters: landmark-based alignment leaves each frame a slightly different sub-pixel position,
a per-frame signature that the temporal contrast (tell frame t from t' of the same clip) would otherwise learn in
place of facial action — with it off, `tcl` learned nothing a linear AU probe could use (README, results).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate, get_worker_info

from .config import STORE_PREFIXES

MEAN, STD = 0.5, 0.25


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


class _ShardDataset(Dataset):
    """Frame shards opened lazily by memory map (so each loader worker maps its own) and an epoch counter that
    seeds the augmentation, so a resumed run sees the same stream."""

    _shards: dict[str, np.ndarray]
    _epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def _shard(self, path: str) -> np.ndarray:
        if not hasattr(self, "_shards"):
            self._shards = {}
        shard = self._shards.get(path)
        if shard is None:
            # a plain array over the memory map: slices of an np.memmap are memmaps too, and creating them cost 13 %
            # of the loader's time
            shard = self._shards[path] = np.asarray(np.load(path, mmap_mode="r"))
        return shard


def is_store(root: Path | str) -> bool:
    """Whether `root` names a clip store (`clpau store`): an object-store URL, or a folder with a store.json."""
    return str(root).startswith(STORE_PREFIXES) or (Path(root) / "store.json").is_file()


class JpegStore:
    """The frames of a clip store (`clpau store` writes it; store.py) read through LitData: item k = frame row k,
    one JPEG each, decoded by libjpeg-turbo into the (rows, S0, S0, 3) uint8 layout of extract's shards.
    A store in an object store (`s3://…`, or `local:/folder` for a folder read as one) is streamed: the chunks a
    batch needs are fetched into `cache_dir` when first asked for, nothing before. Opened lazily, so every loader
    process opens its own; records which of its chunks it has read (`chunks_read`)."""

    def __init__(self, url: Path | str, cache_dir: Path | str | None = None):
        self.url = str(url)
        self.remote = self.url.startswith(STORE_PREFIXES)
        self.cache_dir = Path(cache_dir or "data/cache/store") / hashlib.sha256(self.url.encode()).hexdigest()[:12]
        self.chunks_read: set[int] = set()
        self._items = None

    def file(self, name: str) -> Path:
        """One of the store's own files (clips.parquet, landmarks.npy, store.json, index.json) as a local path,
        fetched into the cache once where the store is remote."""
        if not self.remote:
            path = Path(self.url) / name
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: {self.url} is not a finished clip store "
                                        "(write one with `clpau store`)")
            return path
        local = self.cache_dir / name
        if not local.is_file():
            from litdata.streaming.downloader import get_downloader

            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{name}.{os.getpid()}.tmp")
            get_downloader(self.url, str(self.cache_dir), []).download_file(f"{self.url.rstrip('/')}/{name}", str(tmp))
            os.replace(tmp, local)
        return local

    @property
    def items(self):
        if self._items is None:
            import litdata.streaming.dataset as streaming

            # litdata asks PyPI for a newer version of itself whenever a dataset is made (up to 30 s offline): no
            # network calls but the data's own
            streaming._check_version_and_prompt_upgrade = lambda version: None
            self._items = streaming.StreamingDataset(self.url, cache_dir=str(self.cache_dir / "chunks")
                                                     if self.remote else None)
        return self._items

    @functools.cached_property
    def chunk_starts(self) -> np.ndarray:
        """First item of each chunk, and the item count at the end."""
        index = json.loads(self.file("index.json").read_text())
        return np.cumsum([0] + [c["chunk_size"] for c in index["chunks"]])

    @functools.cached_property
    def side(self) -> int:
        return int(json.loads(self.file("store.json").read_text())["side"])

    def chunk_of(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.chunk_starts, rows, side="right") - 1

    @functools.cached_property
    def landmarks(self) -> np.ndarray:
        """(rows, 68, 2) float16 crop-space landmarks (`crop_landmarks`) of every row."""
        return np.load(self.file("landmarks.npy"), mmap_mode="r")

    def blobs(self, start: int, span: int, stride: int = 1) -> list[bytes]:
        """The JPEG bytes of rows start, start + stride, … below start + span."""
        rows = range(start, start + span, stride)
        self.chunks_read.update(self.chunk_of(np.array([rows[0], rows[-1]])).tolist())
        return [self.items[r]["jpeg"] for r in rows]

    def frames(self, start: int, span: int, stride: int = 1) -> np.ndarray:
        """(T, S0, S0, 3) uint8: rows start, start + stride, … below start + span, decoded."""
        import simplejpeg  # libjpeg-turbo like Pillow, the same pixels at twice Pillow's rate (docs/performance.md)

        blobs = self.blobs(start, span, stride)
        out = np.empty((len(blobs), self.side, self.side, 3), np.uint8)
        for frame, blob in zip(out, blobs, strict=True):
            simplejpeg.decode_jpeg(blob, "RGB", buffer=frame)
        return out


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


class ClipDataset(_ShardDataset):
    """Item: {"view_q", "view_k": (T, 3, S, S) float, "clip_id": int, "identity": int}. `clip_len` frames `stride`
    apart, from a random offset inside the clip when augmenting. With `colour_on_host` False the views are uint8
    crops and the colour jitter is left to the trainer's device (`finish_views`): the loader's workers are spared
    its float passes, and a batch crosses to the GPU in a quarter of the bytes. The frames of other people that
    cross-identity reconstruction swaps in come from `others`, asked for only on the steps that run CIR. With
    `motion`, a batch also holds "motion" (B, T, T): the landmark motion between every two of a clip's frames
    (`landmark_motion`), for the motion-driven margin."""

    def __init__(self, roots: list[Path | str], clip_len: int = 8, stride: int = 1, size: int = 64,
                 augment: bool = True, seed: int = 0, frame_jitter: float = 0.0, colour_on_host: bool = True,
                 motion: bool = False, crop_on_host: bool = True, cache_dir: Path | str | None = None,
                 decode_on_host: bool = True):
        if colour_on_host and not crop_on_host:
            raise ValueError("the crop on the trainer needs the colour jitter there too (it comes after the crop)")
        if not decode_on_host and crop_on_host:
            raise ValueError("decoding on the trainer needs the crop there too (the loader never sees the pixels)")
        self.span = (clip_len - 1) * stride + 1
        self.clips = load_clips(roots, self.span, cache_dir)
        self.cache_dir = cache_dir
        self.store = self.clips["store"].to_numpy()
        self.store_row = self.clips["store_row"].to_numpy()
        self._stores: dict[str, JpegStore] = {}
        self.clip_len, self.stride, self.size, self.augment, self.seed = clip_len, stride, size, augment, seed
        self.frame_jitter, self.colour_on_host, self.motion = frame_jitter, colour_on_host, motion
        self.crop_on_host = crop_on_host
        # a store's frames leave the loader as JPEG bytes, decoded on the trainer's device (`decode_batch`)
        self.decode_on_host = decode_on_host or not self.store.all()
        self._landmarks: dict[str, np.ndarray] = {}
        ids = sorted(self.clips["identity"].unique())
        self.identity_index = {name: i for i, name in enumerate(ids)}
        self.identity = self.clips["identity"].map(self.identity_index).to_numpy()
        self.start_row = self.clips["start_row"].to_numpy()
        self.n_frames = self.clips["n_frames"].to_numpy()
        self.shard_path = self.clips["shard_path"].to_numpy()

    def __len__(self) -> int:
        return len(self.clips)

    def frames(self, i: int, offset: int = 0) -> np.ndarray:
        """(T, S0, S0, 3) uint8 frames of clip i from `offset` on: a view of the memory map, not a copy (from a
        store: decoded)."""
        if self.store[i]:
            return self.jpeg_store(self.store[i]).frames(self.store_row[i] + offset, self.span, self.stride)
        start = self.start_row[i] + offset
        return self._shard(self.shard_path[i])[start: start + self.span: self.stride]

    def frame_side(self, i: int) -> int:
        """S0, the side of clip i's stored frames."""
        if self.store[i]:
            return self.jpeg_store(self.store[i]).side
        return self._shard(self.shard_path[i]).shape[1]

    def jpeg_store(self, url: str) -> JpegStore:
        if url not in self._stores:
            self._stores[url] = JpegStore(url, self.cache_dir)
        return self._stores[url]

    def chunks(self) -> np.ndarray | None:
        """Each clip's chunk of its store, numbered across the stores (None for shards): what `epoch_batches` deals
        to the processes of a DDP run, so that each reads its own chunks."""
        if not self.store.all():
            return None
        out, base = np.empty(len(self), np.int64), 0
        for url in dict.fromkeys(self.store):
            mine = self.store == url
            store = self.jpeg_store(url)
            out[mine] = base + store.chunk_of(self.store_row[mine])
            base += len(store.chunk_starts) - 1
        return out

    def __getitem__(self, i: int) -> dict:
        return {k: v if k == "epoch" else v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: list[int]) -> dict:
        """A whole batch (the DataLoader calls this instead of __getitem__ per clip, see `collate`): each view is
        finished straight into the batch's tensors while it is still in the cache — no copy to collate them.
        (Colour jitter over the whole batch at once was slower: 13 MB streamed through memory per pass.)
        With `colour_on_host` False the views stay uint8 crops, each with its colour jitter's draw in
        "colour_q"/"colour_k" (`draw_colour`), for `finish_views` to apply on the trainer's device."""
        b, t, s = len(indices), self.clip_len, self.size
        epoch = getattr(indices, "epoch", self._epoch)  # an EpochBatch says which epoch it belongs to
        views = ("view_q", "view_k")
        host = self.colour_on_host
        if self.crop_on_host:
            out = {key: _batch_tensor(b, t, 3, s, s, dtype=torch.float32 if host else torch.uint8) for key in views}
        else:  # each clip's frames once, for both views; their crops as boxes
            s0 = self.frame_side(indices[0])
            out = {CROP_KEYS[key]: _batch_tensor(b, t, 3) for key in views}
            if self.decode_on_host:
                out["frames"] = _batch_tensor(b, t, s0, s0, 3, dtype=torch.uint8)
            else:
                jpegs: list[bytes] = []
        if not host:
            out |= {COLOUR_KEYS[key]: _batch_tensor(b, COLOUR_PARAMS) for key in views}
        if self.motion:
            out["motion"] = torch.empty(b, t, t)
        for n, i in enumerate(indices):
            rng = np.random.default_rng((self.seed, epoch, i))
            offset = int(rng.integers(0, self.n_frames[i] - self.span + 1)) if self.augment else 0
            clip = self.frames(i, offset) if self.decode_on_host else None
            if self.motion:
                out["motion"][n] = torch.from_numpy(landmark_motion(self.clip_landmarks(i, offset)))
            if not self.decode_on_host:
                jpegs += self.jpeg_store(self.store[i]).blobs(self.store_row[i] + offset, self.span, self.stride)
            elif not self.crop_on_host:
                out["frames"][n].numpy()[...] = clip  # one copy, memory map -> the batch
            for key in views:  # each its own augmentation
                if host:
                    augment_view(clip, rng, s, self.augment, self.frame_jitter, out=out[key][n])
                    continue
                # the same draws in the same order: the same views as the loader's, up to rounding
                if self.crop_on_host:
                    out[key][n] = crop_resize(clip, rng, s, self.augment, self.frame_jitter)
                else:
                    out[CROP_KEYS[key]][n] = torch.from_numpy(draw_crop(rng, s0, t, self.augment, self.frame_jitter))
                out[COLOUR_KEYS[key]][n] = torch.from_numpy(
                        draw_colour(rng if self.augment else None, scale=1 / 255, mean=MEAN, std=STD))
        if not self.decode_on_host:
            # one numpy array and the lengths: Fabric moves tensors to the device, and the device's JPEG decoder reads
            # its input from host memory
            out["jpeg"] = np.frombuffer(b"".join(jpegs), np.uint8).copy()
            out["jpeg_lengths"] = np.array([len(j) for j in jpegs])
        # the indices also as a list, which stays on the host when Fabric moves the batch to a GPU: `others` needs
        # them there, and reading `clip_id` back from the device would stall the launched kernels
        return {**out, "clip_id": torch.as_tensor(indices), "identity": torch.from_numpy(self.identity[indices]),
                "index": list(indices), "epoch": epoch}

    def clip_landmarks(self, i: int, offset: int = 0) -> np.ndarray:
        """(T, 68, 2) crop-space landmarks of the frames `frames(i, offset)` returns."""
        if self.store[i]:
            start = self.store_row[i] + offset
            lm = self.jpeg_store(self.store[i]).landmarks[start: start + self.span: self.stride]
            return lm.astype(np.float32)
        path = self.shard_path[i]
        if path not in self._landmarks:
            self._landmarks[path] = crop_landmarks(path)
        start = self.start_row[i] + offset
        return self._landmarks[path][start: start + self.span: self.stride]

    def others(self, indices: list[int], epoch: int | None = None) -> torch.Tensor:
        """(B, 3, S, S): for each clip i, an augmented frame of someone else — what cross-identity reconstruction
        swaps in. Drawn from the clip's own random stream for `epoch` (default: set_epoch's; so a rerun, or a resumed run, swaps the
        same partners), apart from the views' stream: asking for them or not leaves the views as they are. Only
        the steps that run CIR ask (1 in `cir_every`): made with every batch, they were a third of the views the
        loader made, nearly all unused (without them 12,040 -> 14,150 frames/s in the training process)."""
        out = torch.empty(len(indices), 1, 3, self.size, self.size)
        for n, i in enumerate(indices):
            rng = np.random.default_rng((self.seed, self._epoch if epoch is None else epoch, i, 1))
            j = int(rng.integers(len(self)))
            while self.identity[j] == self.identity[i] and len(self.identity_index) > 1:
                j = int(rng.integers(len(self)))
            augment_view(self.frames(j, 0)[:1], rng, self.size, self.augment, self.frame_jitter, out=out[n])
        return out[:, 0]


def _batch_tensor(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An empty batch tensor; in a loader worker, in shared memory from the start (as torch's default collate
    does): a worker's batch otherwise travels to the trainer by a copy into shared memory made when it is sent."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = math.prod(shape)
    empty = torch.empty(0, dtype=dtype)
    return empty.new(empty._typed_storage()._new_shared(numel)).view(shape)


def collate(batch):
    """The DataLoader's collate: batches that a dataset's `__getitems__` already assembled pass through as they
    are; lists of items are stacked as usual."""
    return batch if isinstance(batch, dict) else default_collate(batch)


def augment_view(frames: np.ndarray, rng: np.random.Generator | None, size: int, augment: bool,
                 frame_jitter: float = 0.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """One augmentation for all of `frames` (N, S0, S0, 3) uint8 — the shards' layout; a memory map will do — ->
    (N, 3, size, size) normalised float (written into `out` when given): `crop_resize`, then `colour_jitter`."""
    x = crop_resize(frames, rng, size, augment, frame_jitter).to(torch.float32, memory_format=torch.contiguous_format)
    if augment:  # the normalisation is folded into the colour matrix: no passes of its own
        return colour_jitter(x, rng, scale=1 / 255, mean=MEAN, std=STD, out=out)
    return torch.mul(x, 1 / (255 * STD), out=x if out is None else out).sub_(MEAN / STD)


def draw_crop(rng: np.random.Generator | None, s0: int, n: int, augment: bool,
              frame_jitter: float = 0.0) -> np.ndarray:
    """The geometric half of an augmentation, drawn: one scale/translation crop of side 0.85–1 × S0 for all n
    frames, each frame moved by its own up to ±frame_jitter·S0 px -> (n, 3) float32 (top, left, side) in pixels
    of the S0 x S0 frame; the whole frames without augmentation (no draw)."""
    if not augment:
        return np.tile(np.array([0, 0, s0], np.float32), (n, 1))
    scale = rng.uniform(0.85, 1.0)
    side = max(8, int(round(s0 * scale)))
    top = int(rng.integers(0, s0 - side + 1))
    left = int(rng.integers(0, s0 - side + 1))
    j = int(round(frame_jitter * s0))
    if j and n > 1:
        dy = np.clip(top + rng.integers(-j, j + 1, n), 0, s0 - side)
        dx = np.clip(left + rng.integers(-j, j + 1, n), 0, s0 - side)
    else:
        dy, dx = np.full(n, top), np.full(n, left)
    return np.stack([dy, dx, np.full(n, side)], axis=1).astype(np.float32)


def crop_resize(frames: np.ndarray, rng: np.random.Generator | None, size: int, augment: bool,
                frame_jitter: float = 0.0) -> torch.Tensor:
    """The geometric half of an augmentation (`draw_crop`) applied to `frames` (N, S0, S0, 3) uint8 -> (N, 3, size,
    size) uint8 (channels_last), resized with antialiasing."""
    boxes = draw_crop(rng, frames.shape[1], len(frames), augment, frame_jitter).astype(int)
    side = boxes[0, 2]
    if (boxes[:, :2] != boxes[0, :2]).any():
        # cropped in numpy: a slice there costs a fraction of a torch call's overhead
        frames = np.stack([f[a: a + side, b: b + side] for f, (a, b, _) in zip(frames, boxes, strict=True)])
    else:
        top, left = boxes[0, :2]
        frames = frames[:, top: top + side, left: left + side]
    # (N, H, W, 3) seen as (N, 3, H, W) is the channels_last layout: the uint8 resize then takes torch's SIMD
    # antialiasing path, 5x faster than on floats. (A copy only where numpy must make one: a read-only memory map
    # is never handed to torch.)
    x = torch.from_numpy(np.require(frames, np.uint8, ["C", "W"])).permute(0, 3, 1, 2)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


LUMA = (0.299, 0.587, 0.114)  # they sum to 1
_TO_GREY = np.array([LUMA] * 3)  # each channel becomes the luma
_EYE = np.eye(3)


COLOUR_PARAMS = 14  # a view's colour jitter: its 3x3 matrix, 3 weights of the frame mean, an offset, the blur coin
COLOUR_KEYS = {"view_q": "colour_q", "view_k": "colour_k"}
CROP_KEYS = {"view_q": "crop_q", "view_k": "crop_k"}


def crop_on_device(frames: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """`crop_resize` on the trainer's device, for a batch: frames (B, T, S0, S0, 3) uint8 and each frame's box
    (B, T, 3) (top, left, side in pixels, `draw_crop`) -> (B, T, 3, size, size) float in 0–255, by bilinear sampling
    at F.interpolate's pixel centres (align_corners False). Where the crops shrink, they are sampled k times finer
    (k = ceil(S0 / size)) and averaged k x k, in place of interpolate's antialiasing."""
    b, t, s0 = frames.shape[:3]
    n, k = b * t, max(1, -(-s0 // size))
    x = frames.reshape(n, s0, s0, 3).permute(0, 3, 1, 2).float()
    boxes = boxes.reshape(n, 3).to(x.dtype)
    # output coordinate u in [-1, 1] -> input (2·(left + (u + 1)/2·side))/S0 − 1
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = boxes[:, 2] / s0
    theta[:, 0, 2] = (2 * boxes[:, 1] + boxes[:, 2]) / s0 - 1
    theta[:, 1, 2] = (2 * boxes[:, 0] + boxes[:, 2]) / s0 - 1
    grid = F.affine_grid(theta, [n, 3, k * size, k * size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if k > 1:
        out = F.avg_pool2d(out, k)
    return out.reshape(b, t, 3, size, size)


def colour_jitter(x: torch.Tensor, rng: np.random.Generator, scale: float = 1.0, mean: float = 0.0,
                  std: float = 1.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """Saturation, contrast, brightness (each ×0.7–1.3), greyscale (p 0.1), a 3x3 binomial blur (p 0.3), clipped to
    [0, 1], then normalised, (y − mean) / std; one draw for all frames of x (N, 3, S, S), whose values times `scale`
    lie in [0, 1] (uint8 values: 1/255). Written into `out` (N, 3, S, S) when given."""
    return apply_colour(x[None], draw_colour(rng, scale, mean, std), mean, std, None if out is None else out[None])[0]


def draw_colour(rng: np.random.Generator | None, scale: float = 1.0, mean: float = 0.0,
                std: float = 1.0) -> np.ndarray:
    """One view's colour jitter (`colour_jitter`) drawn, as COLOUR_PARAMS float32 numbers for `apply_colour`; no
    rng: the normalisation alone.

    Saturation, contrast, brightness and greyscale are each linear in a pixel's colour: together they are one 3x3
    matrix and an offset per frame, applied in one pass (1.4x faster loading than one pass each). The input's
    scale and the normalisation are affine too, so they are folded into the same matrix and offset, and the clip
    to [0, 1] becomes one to [−mean/std, (1 − mean)/std]."""
    if rng is None:
        return np.array([*(np.eye(3) * scale / std).ravel(), 0, 0, 0, -mean / std, 0], np.float32)
    b, c, s = rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)
    grey, blur = rng.random() < 0.1, rng.random() < 0.3
    # the 3x3 algebra in numpy: a dozen torch calls on 3x3 tensors cost more than the pass over the pixels
    sat = s * _EYE + (1 - s) * _TO_GREY  # x + (1 − s)·(grey − x)
    mix = b * c * scale * sat  # then x' = b·(c·(sat·x − frame_mean) + frame_mean)
    if grey:
        mix = _TO_GREY @ mix  # the offset stays: grey(offset, offset, offset) = offset
    gain, shift = b * (1 - c) / std, -mean / std  # offset' = (b·(1 − c)·frame_mean − mean) / std
    mix = mix / std
    if blur:  # the blur's weights sum to 16: its division folded in here too
        mix, gain, shift = mix / 16, gain / 16, shift / 16
    # per frame: the saturated image's mean, which contrast keeps: mean over channels of sat·(channel means)
    weights = sat.mean(0) * scale * gain
    return np.array([*mix.ravel(), *weights, shift, float(blur)], np.float32)


def apply_colour(x: torch.Tensor, params: torch.Tensor | np.ndarray, mean: float = 0.0, std: float = 1.0,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """Views x (B, V, 3, H, W) — uint8 crops or float — coloured by their draws `params` (B, COLOUR_PARAMS), one per
    view of V frames, on x's device -> float (B, V, 3, H, W) in [−mean/std, (1 − mean)/std] (into `out` when
    given). The loader's case, one view drawn on the host, takes the draw as numpy (COLOUR_PARAMS,): torch calls on
    14 numbers would cost more than the pass over the pixels. A batch reads nothing back from the device: on a
    GPU the blur is computed for every view and kept where drawn."""
    b, v, c, h, w = x.shape
    n = b * v
    x = x.reshape(n, c, h * w).float()  # a view when x is float and contiguous already
    means = x.mean(2)
    if isinstance(params, np.ndarray):
        mix = torch.from_numpy(params[:9].reshape(1, 3, 3)).expand(n, 3, 3)
        # each frame's offset: its channel means weighted, plus the view's shift
        offset = torch.mv(means, torch.from_numpy(params[9:12])).add_(float(params[12]))
        blurred = bool(params[13])
    else:
        params = params.to(torch.float32)
        mix = params[:, :9].view(b, 1, 3, 3).expand(b, v, 3, 3).reshape(n, 3, 3)
        offset = torch.baddbmm(params[:, 12, None, None], means.view(b, v, 3), params[:, 9:12, None])
        blurred = None  # per view
    out = torch.empty((b, v, c, h, w), device=x.device) if out is None else out
    coloured = out if blurred is False else torch.empty_like(out)
    torch.baddbmm(offset.view(n, 1, 1).expand(n, 3, 1), mix, x, out=coloured.view(n, 3, h * w))
    if blurred is None:
        smooth = _binomial_sum(coloured.view(n, c, h, w)).view(b, v, c, h, w)
        torch.where(params[:, 13].view(b, 1, 1, 1, 1) > 0, smooth, coloured, out=out)
    elif blurred:
        _binomial_sum(coloured.view(n, c, h, w), out=out.view(n, c, h, w))
    return out.clamp_(-mean / std, (1 - mean) / std)


def finish_views(batch: dict, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch's two views as normalised float: as they come when the loader coloured them, else
    coloured here, on the batch's device, from the loader's uint8 crops and colour draws (`colour_on_host`) — or
    first cropped here from the clip's frames (`crop_on_host` False; `size` the views' side), which a clip store's
    batch may bring as JPEG bytes to decode first (`decode_on_host` False)."""
    if "colour_q" not in batch:
        return batch["view_q"], batch["view_k"]
    if "jpeg" in batch:  # a store's frames as JPEG bytes: decoded here, on the batch's device
        frames = decode_batch(batch["jpeg"], batch["jpeg_lengths"], batch["crop_q"].device)
        batch = {**batch, "frames": frames.unflatten(0, batch["crop_q"].shape[:2])}
    if "frames" in batch:
        views = {key: crop_on_device(batch["frames"], batch[CROP_KEYS[key]], size or batch["frames"].shape[2])
                 for key in ("view_q", "view_k")}
    else:
        views = batch
    q, k = (apply_colour(views[key], batch[COLOUR_KEYS[key]], MEAN, STD) for key in ("view_q", "view_k"))
    return q, k


def gpu_jpeg_decoder():
    """torchvision's nvjpeg batch decoder, or None where torchvision does not load (the CPU stack: its PyPI build
    does not load beside torch's CPU build)."""
    try:
        from torchvision.io import decode_jpeg
    except Exception:  # not installed, or its compiled ops do not match this torch
        return None
    return decode_jpeg


def decode_batch(jpeg: np.ndarray, lengths: np.ndarray, device: torch.device) -> torch.Tensor:
    """N JPEG frames (their bytes one after another in `jpeg`, `lengths` each) -> (N, S0, S0, 3) uint8 on `device`:
    decoded there by nvjpeg in one batched call on a CUDA device, else by libjpeg-turbo in this process."""
    if device.type == "cuda" and (decode_jpeg := gpu_jpeg_decoder()) is not None:
        parts = torch.from_numpy(jpeg).split(lengths.tolist())
        return torch.stack(decode_jpeg(list(parts), device=device)).permute(0, 2, 3, 1)
    import simplejpeg

    ends = np.cumsum(lengths)
    first = simplejpeg.decode_jpeg(jpeg[:ends[0]].tobytes(), "RGB")
    out = np.empty((len(lengths), *first.shape), np.uint8)
    out[0] = first
    for k in range(1, len(lengths)):
        simplejpeg.decode_jpeg(jpeg[ends[k - 1]:ends[k]].tobytes(), "RGB", buffer=out[k])
    return torch.from_numpy(out).to(device)


def _binomial_sum(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """16 × the 3x3 binomial blur ([1 2 1] in each direction, edges replicated), as two separable passes of shifted
    adds: a depthwise convolution of the same kernel was the loader's single largest cost."""
    x = F.pad(x, (1, 1, 0, 0), mode="replicate")
    x = torch.add(x[..., :-2], x[..., 2:]).add_(x[..., 1:-1], alpha=2)
    x = F.pad(x, (0, 0, 1, 1), mode="replicate")
    return torch.add(x[..., :-2, :], x[..., 2:, :], out=out).add_(x[..., 1:-1, :], alpha=2)


class LabelledFrames(_ShardDataset):
    """Labelled face frames (benchmarks.LabelledSet) as a training set: item {"image": (3, size, size),
    "labels": (n_aus,) float, -1 = unknown}."""

    def __init__(self, labelled, size: int = 64, augment: bool = True, seed: int = 0):
        from .labels import UNKNOWN

        self.shard, self.row = labelled.shard, labelled.row
        lab = labelled.labels.astype(np.float32)
        lab[labelled.labels == UNKNOWN] = -1
        self.labels = lab
        self.size, self.augment, self.seed = size, augment, seed

    def __len__(self) -> int:
        return len(self.row)

    def __getitem__(self, i: int, epoch: int | None = None) -> dict:
        frame = self._shard(self.shard[i])[self.row[i]: self.row[i] + 1]
        rng = np.random.default_rng((self.seed, self._epoch if epoch is None else epoch, i))
        return {"image": augment_view(frame, rng, self.size, self.augment)[0],
                "labels": torch.from_numpy(self.labels[i])}

    def __getitems__(self, indices: list[int]) -> dict:
        """A batch, augmented as its epoch says (an EpochBatch's, else `set_epoch`'s)."""
        epoch = getattr(indices, "epoch", self._epoch)
        return default_collate([self.__getitem__(i, epoch) for i in indices])
