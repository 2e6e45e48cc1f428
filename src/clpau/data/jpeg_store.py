"""Reading a clip store (`clpau store` writes it, `store.py`): JPEG frames in LitData chunks, from a folder or
streamed from an object store; decoding on the host (libjpeg-turbo) or on a CUDA device (nvjpeg)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from clpau.core.params import STORE_PREFIXES


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
