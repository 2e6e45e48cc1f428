"""`store`: extract output -> a compressed clip store for streaming (data/store.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from clpau.core.params import _Section


class StoreParams(_Section):
    """`clpau store`: extract output -> a compressed clip store for streaming (store.py)."""
    sources: list[Path] = [Path("data/trainset")]
    out_dir: Path = Path("data/store")
    quality: int = Field(90, ge=1, le=100, description="JPEG quality of every frame (docs/performance.md: q90 keeps "
                                                       "37.7-39.9 dB; the store of the default corpus "
                                                       "9.9x fewer bytes than raw)")
    chunk_mb: float = Field(16, gt=0, description="LitData chunk size; a DDP process reads whole chunks of its own, so "
                                                  "a store needs at least as many chunks as processes")
    workers: int = Field(1, ge=1, description="processes encoding shards")
