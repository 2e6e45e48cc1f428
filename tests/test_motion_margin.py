"""TCL's margin driven by measured landmark motion (`margin_by: motion`): the landmarks, the motion, the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clpau.config import ConfigError, PretrainParams, parse_params
from clpau.data.clips import crop_landmarks, landmark_motion
from clpau.data.datasets import ClipDataset
from clpau.methods.tcl import tcl_loss


def test_landmark_motion_is_the_mean_inner_landmark_distance():
    lm = np.zeros((3, 68, 2), np.float32)
    lm[1, 17:, 0] = 0.1          # every inner landmark 0.1 to the right
    lm[2, :17] = 5.0             # only the jaw line moved: not counted
    m = landmark_motion(lm)
    assert m[0, 1] == pytest.approx(0.1) and m[1, 0] == pytest.approx(0.1)
    assert m[0, 2] == 0 and np.all(np.diag(m) == 0)


def test_crop_landmarks_put_the_eyes_where_the_alignment_did(synth_clips):
    """The affine of each frame maps its landmarks into the crop: the eye centres land on the alignment template
    (x = 0.5 -/+ eye_distance / 2 = 0.35 / 0.65, y = eye_y = 0.36 of the crop side)."""
    shard = next((synth_clips / "frames").glob("*/faces.npy"))
    lm = crop_landmarks(shard)
    assert lm.shape == (len(np.load(shard, mmap_mode="r")), 68, 2)
    right, left = lm[:, 36:42].mean(1), lm[:, 42:48].mean(1)
    assert np.allclose(right.mean(0), [0.35, 0.36], atol=0.02) and np.allclose(left.mean(0), [0.65, 0.36], atol=0.02)


def test_a_batch_carries_the_clips_motion_only_when_asked(synth_clips):
    ds = ClipDataset([synth_clips], clip_len=4, stride=2, motion=True)
    batch = ds.__getitems__([0, 1])
    m = batch["motion"]
    assert m.shape == (2, 4, 4) and torch.allclose(m, m.transpose(1, 2)) and torch.all(m.diagonal(dim1=1, dim2=2) == 0)
    assert float(m[0, 0, 1]) > 0
    assert "motion" not in ClipDataset([synth_clips], clip_len=4).__getitems__([0])


def test_motion_equal_to_the_frame_distance_gives_the_temporal_margin():
    torch.manual_seed(0)
    q, k = F.normalize(torch.randn(2, 5, 8), dim=-1), F.normalize(torch.randn(2, 5, 8), dim=-1)
    ids = torch.tensor([0, 1])
    idx = torch.arange(5)
    delta = (idx[:, None] - idx[None, :]).abs().float().expand(2, 5, 5)
    by_time = tcl_loss(q, k, ids, m_max=0.3, delta_scale=4.0)
    by_motion = tcl_loss(q, k, ids, m_max=0.3, motion=delta * 0.01, motion_scale=0.04)
    for term in ("nce", "rank", "loss"):
        assert by_motion[term].item() == pytest.approx(by_time[term].item(), rel=1e-5)


def test_frames_that_did_not_move_get_no_margin():
    q = F.normalize(torch.randn(1, 3, 4), dim=-1)
    still = tcl_loss(q, q, torch.tensor([0]), m_max=0.5, rank_weight=0.0, motion=torch.zeros(1, 3, 3))
    plain = tcl_loss(q, q, torch.tensor([0]), m_max=0.0, rank_weight=0.0)
    assert still["loss"].item() == pytest.approx(plain["loss"].item(), rel=1e-6)


def test_margin_by_motion_is_checked_and_trains(synth_clips, tmp_path, monkeypatch):
    """In training, every step's loss gets the batch's measured landmark motion, and the margins it sets raise the
    loss over what the same codes give unmoved (every frame at rest: no margin)."""
    import clpau.methods.tcl as tcl_module
    from clpau.train.pretrain import run_pretrain

    with pytest.raises(ConfigError, match="margin_by"):
        parse_params({"pretrain": {"tcl": {"variant": "time_contrast", "margin_by": "motion"}}}, "params.yaml")
    p = PretrainParams(data=[synth_clips], out_dir=tmp_path / "m", live_dir=tmp_path / "live", batch_clips=4,
                       clip_len=4, max_steps=2, log_every=1, tcl={"margin_by": "motion"})
    calls = []

    def spy(q, k, clip_ids, *args, motion=None, **kw):
        out = tcl_loss(q, k, clip_ids, *args, motion=motion, **kw)
        with torch.no_grad():
            at_rest = tcl_loss(q, k, clip_ids, *args, motion=torch.zeros_like(motion), **kw)
        calls.append({"motion": motion.detach().clone(), "scale": kw["motion_scale"], "nce": float(out["nce"]),
                      "nce_at_rest": float(at_rest["nce"])})
        return out

    monkeypatch.setattr(tcl_module, "tcl_loss", spy)
    assert run_pretrain(p, progress=False, log=lambda *_: None)["steps"] == 2
    assert calls and all(c["scale"] == p.tcl.motion_scale for c in calls)
    for c in calls:
        m = c["motion"]
        assert m.shape == (4, 4, 4) and torch.equal(m, m.transpose(1, 2)) and not m.diagonal(dim1=1, dim2=2).any()
        assert (m[:, 0, 1:] > 0).all()  # the rendered faces move between any two frames of a clip
        assert c["nce"] > c["nce_at_rest"] + 1e-3  # the margins took effect
