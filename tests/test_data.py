"""Clip views: one augmentation per view and clip, plus a small shift per frame (hides alignment jitter)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from clpau.data import ClipDataset


def _one_still_clip(tmp_path, frames: int = 8):
    rng = np.random.default_rng(0)
    still = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    np.save(tmp_path / "faces.npy", np.repeat(still[None], frames, 0))
    pd.DataFrame({"clip_id": ["a", "b"], "identity": ["A", "B"], "n_frames": [frames, frames],
                  "shard": ["faces.npy", "faces.npy"], "start_row": [0, 0]}).to_parquet(tmp_path / "clips.parquet")


def test_frames_of_a_still_clip_differ_only_by_the_per_frame_shift(tmp_path):
    _one_still_clip(tmp_path)
    plain = ClipDataset([tmp_path], clip_len=8, size=32, frame_jitter=0.0)[0]["view_q"]
    assert all(torch.equal(plain[0], f) for f in plain)  # one augmentation for the whole view
    jittered = ClipDataset([tmp_path], clip_len=8, size=32, frame_jitter=0.06)[0]["view_q"]
    assert sum(not torch.equal(jittered[0], f) for f in jittered[1:]) >= 5
    # the shift is geometric only: colour statistics of the frames stay those of one augmentation
    means = jittered.mean((1, 2, 3))
    assert float(means.max() - means.min()) < 0.1 * float(jittered.std())
