"""Small file helpers shared by the stages: atomic writes and content hashes.

An interrupted run must never leave a file that looks finished, so every artefact is written under a temporary
name in the same folder and renamed into place (rename is atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; artefacts are for everyone to read
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def save_torch(obj: Any, path: Path | str) -> None:
    """torch.save, atomically, of tensors and plain values: the same object gives the same bytes. (Saved to a path,
    torch names the archive's inner folder after the file — here the random temporary name — so every run wrote a
    different file, and DVC saw a new encoder.pt each time.)"""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Like `atomic_path` for a folder: build it under a temporary name, then swap it in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            old = path.with_name(f".{path.name}.old{TMP_SUFFIX}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path | str, obj: Any, sort_keys: bool = True) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, default=str) + "\n")


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_parquet(path: Path | str, df) -> None:  # df: pandas.DataFrame
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def hash_modules(h: Any, names: tuple[str, ...]) -> None:
    """Feed the source of this package's modules `names` to the hash `h` — a module (`video/extract.py`) or a
    folder of them (`methods`: every .py file under it, in sorted order), relative to the package: what a cached
    result depends on when the code that made it changes (DVC reruns the stage, and a persisted result must not
    stand in for the new one). The folders are the stage's code deps in dvc.yaml."""
    package = Path(__file__).parents[1]
    for name in names:
        path = package / name
        for module in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(str(module.relative_to(package)).encode())
            h.update(module.read_bytes())


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def remove_stale_tmp(folder: Path) -> None:
    """Delete leftovers of an interrupted write (files or folders ending in TMP_SUFFIX)."""
    if not folder.exists():
        return
    for p in folder.iterdir():
        if p.name.endswith(TMP_SUFFIX):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
