"""The datasets the loop reads: `ClipDataset` (two augmented views of T consecutive frames of a clip, and frames of
other people for CIR) and `LabelledFrames` (labelled frames of the benchmark, for the supervised bound and
fine-tuning). Frames come from extract's shards by memory map, or from a clip store (`jpeg_store.py`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from clpau.data.augment import (
    COLOUR_KEYS,
    COLOUR_PARAMS,
    CROP_KEYS,
    MEAN,
    STD,
    augment_view,
    crop_resize,
    draw_colour,
    draw_crop,
)
from clpau.data.clips import crop_landmarks, landmark_motion, load_clips
from clpau.data.jpeg_store import JpegStore


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
        # who is who: the training set's persons (found by face, `clpau trainset`), else an extract's name rule
        who = self.clips["person" if "person" in self.clips else "identity"].astype(str)
        self.identity_index = {name: i for i, name in enumerate(sorted(who.unique()))}
        self.identity = who.map(self.identity_index).to_numpy()
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


class LabelledFrames(_ShardDataset):
    """Labelled face frames (benchmarks.LabelledSet) as a training set: item {"image": (3, size, size),
    "labels": (n_aus,) float, -1 = unknown}."""

    def __init__(self, labelled, size: int = 64, augment: bool = True, seed: int = 0):
        from clpau.core.labels import UNKNOWN

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
