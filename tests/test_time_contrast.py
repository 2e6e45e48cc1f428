"""The time-contrastive reading of TCL (time_contrast.py): known answers on tiny tensors, and it trains in the loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clpau.config import ConfigError, PretrainParams, parse_params
from clpau.methods.tcl import tcl_loss
from clpau.methods.time_contrast import time_contrastive_loss


def _unit(*rows) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_hand_computed_positives_negatives_and_the_gap():
    # one clip of 3 frames, pos_window 1, neg_window 2: anchor 0 -> positives {0, 1}, negative {2};
    # anchor 1 -> positives {0, 1, 2}, no negative; anchor 2 -> positives {1, 2}, negative {0}
    q = _unit([1, 0], [0.6, 0.8], [0, 1]).view(1, 3, 2)
    k = q.clone()
    tau = 0.5
    s = (q[0] @ k[0].T / tau).tolist()
    expected = []
    for anchor, positives, candidates in ((0, [0, 1], [0, 1, 2]), (1, [0, 1, 2], [0, 1, 2]), (2, [1, 2], [0, 1, 2])):
        log_z = math.log(sum(math.exp(s[anchor][c]) for c in candidates))
        expected.append(-sum(s[anchor][p] - log_z for p in positives) / len(positives))
    out = time_contrastive_loss(q, k, torch.tensor([0]), tau=tau, pos_window=1, neg_window=2)
    assert out["loss"].item() == pytest.approx(sum(expected) / 3, rel=1e-5)
    assert out["rank"].item() == 0 and out["logits"].shape == (3, 4)  # own key + the clip's 3 columns


def test_with_only_the_own_key_positive_it_is_infonce_over_the_clip():
    # pos_window 0, neg_window 1: every other frame a negative -> the margin reading without margin or ranking
    torch.manual_seed(0)
    q, k = F.normalize(torch.randn(2, 4, 8), dim=-1), F.normalize(torch.randn(2, 4, 8), dim=-1)
    queue, queue_ids = F.normalize(torch.randn(6, 8), dim=-1), torch.tensor([0, 1, 5, 7, -1, 9])
    ids = torch.tensor([0, 1])
    ours = time_contrastive_loss(q, k, ids, queue, queue_ids, tau=0.2, pos_window=0, neg_window=1)["loss"]
    margin = tcl_loss(q, k, ids, queue, queue_ids, tau=0.2, m_max=0.0, rank_weight=0.0)["loss"]
    assert ours.item() == pytest.approx(margin.item(), rel=1e-5)


def test_frames_in_the_gap_are_neither_positive_nor_negative():
    torch.manual_seed(1)
    q, k = F.normalize(torch.randn(1, 4, 8), dim=-1), F.normalize(torch.randn(1, 4, 8), dim=-1)
    # pos_window 0 and neg_window 4 > every Δ in a 4-frame clip: each anchor sees only its own key -> loss 0
    assert time_contrastive_loss(q, k, torch.tensor([3]), pos_window=0, neg_window=4)["loss"].item() == \
        pytest.approx(0.0, abs=1e-6)
    # pos_window 0, neg_window 3: only frames 0 and 3 are each other's negatives; moving frame 1's and 2's keys for
    # anchor 0 changes nothing but their own anchors' terms -> the gradient w.r.t. q[0] ignores k[1], k[2]
    q0 = q.clone().requires_grad_(True)
    time_contrastive_loss(q0, k, torch.tensor([3]), pos_window=0, neg_window=3)["loss"].backward()
    g = q0.grad[0, 0].clone()
    k2 = k.clone()
    k2[0, 1:3] = F.normalize(torch.randn(2, 8), dim=-1)
    q1 = q.clone().requires_grad_(True)
    time_contrastive_loss(q1, k2, torch.tensor([3]), pos_window=0, neg_window=3)["loss"].backward()
    assert torch.allclose(g, q1.grad[0, 0], atol=1e-6)


def test_the_anchor_clips_own_queue_keys_and_empty_slots_are_not_negatives():
    q = _unit([1, 0], [0, 1]).view(1, 2, 2)
    k = q.clone()
    queue = _unit([1, 0], [1, 0])
    base = time_contrastive_loss(q, k, torch.tensor([4]), pos_window=0, neg_window=1)["loss"]
    masked = time_contrastive_loss(q, k, torch.tensor([4]), queue, torch.tensor([4, -1]), pos_window=0,
                                   neg_window=1)["loss"]
    other = time_contrastive_loss(q, k, torch.tensor([4]), queue, torch.tensor([5, 6]), pos_window=0,
                                  neg_window=1)["loss"]
    assert masked.item() == pytest.approx(base.item()) and other.item() > base.item()


def test_windows_are_checked():
    q = F.normalize(torch.randn(1, 3, 4), dim=-1)
    with pytest.raises(ValueError, match="pos_window < neg_window"):
        time_contrastive_loss(q, q, torch.tensor([0]), pos_window=2, neg_window=2)
    with pytest.raises(ConfigError, match="pretrain"):
        parse_params({"pretrain": {"tcl": {"variant": "time_contrast", "pos_window": 1, "neg_window": 8},
                                   "clip_len": 8}}, "params.yaml")
    assert PretrainParams(clip_len=8, tcl={"variant": "time_contrast", "pos_window": 1, "neg_window": 3}).tcl.neg_window == 3


def test_clp_trains_with_the_time_contrastive_reading(synth_clips, tmp_path, monkeypatch):
    """Every training step's in-clip term is time_contrastive_loss of that step's codes, with the params' windows, and
    it is what dvclive logs for the step."""
    import clpau.methods.tcl as tcl_module
    from clpau.train.pretrain import build_method, run_pretrain

    p = PretrainParams(data=[synth_clips], out_dir=tmp_path / "m", live_dir=tmp_path / "live", batch_clips=4,
                       clip_len=4, max_steps=2, log_every=1, method="clp",
                       tcl={"variant": "time_contrast", "pos_window": 1, "neg_window": 2})
    assert build_method(p).loss_fn is time_contrastive_loss
    calls = []

    def spy(q, k, clip_ids, *args, **kw):
        out = time_contrastive_loss(q, k, clip_ids, *args, **kw)
        calls.append({"shape": tuple(q.shape), "windows": (kw["pos_window"], kw["neg_window"]),
                      "nce": float(out["nce"].detach())})
        return out

    monkeypatch.setattr(tcl_module, "time_contrastive_loss", spy)
    assert run_pretrain(p, progress=False, log=lambda *_: None)["steps"] == 2
    per_step = 2 if build_method(p).symmetric else 1  # online keys: both views are queries, one call each
    assert len(calls) == 2 * per_step
    assert {c["windows"] for c in calls} == {(1, 2)} and {c["shape"][:2] for c in calls} == {(4, 4)}
    rows = [line.split("\t") for line in (p.live_dir / "plots" / "metrics" / "train" / "nce.tsv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [1, 2]
    for step, (_, logged) in enumerate(rows):
        mine = calls[step * per_step:(step + 1) * per_step]
        assert float(logged) == pytest.approx(sum(c["nce"] for c in mine) / per_step, rel=1e-6)
