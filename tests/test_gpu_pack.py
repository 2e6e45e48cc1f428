"""bench/gpu_pack.py's slice of the clips: a loadable extract output whose replicas are other people on the same
shards (the GPU checks' loader and training loop read it)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from clpau.data.datasets import ClipDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_pack  # noqa: E402


def test_packed_slice_lists_each_chosen_persons_clips_once_per_replica(synth_clips, tmp_path):
    source = pd.read_parquet(synth_clips / "clips.parquet")
    out = tmp_path / "clips"
    size = gpu_pack.pack_clips(synth_clips, out, videos=2, replicas=3)
    packed = pd.read_parquet(out / "clips.parquet")
    people = sorted(source["identity"].unique())[:2]
    own = source[source["identity"].isin(people)]
    assert len(packed) == 3 * len(own) and packed["clip_id"].is_unique
    assert packed["identity"].nunique() == 6 and set(packed["shard"]) == set(own["shard"])
    assert size == sum(f.stat().st_size for f in (out / "frames").rglob("*") if f.is_file()) > 0
    ds = ClipDataset([out], clip_len=4, size=32, augment=False)
    first, replica = ds.frames(0), ds.frames(len(own))  # a clip and its first replica: the same frames
    assert np.array_equal(first, replica) and packed["identity"][0] != packed["identity"][len(own)]


def test_every_packed_wheel_is_pinned():
    pinned = gpu_pack.pins()
    assert all(gpu_pack.normal(name) in pinned for name in gpu_pack.WHEELS)
