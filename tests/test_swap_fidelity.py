"""Swap fidelity against the renderer's truth (issue 33): the truth is what the video shows, the measures and the
read-out give known answers, and the swap's references are what a decoder ignoring one code makes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clpau.config import BenchmarkParams, ExtractParams, PretrainParams, SynthParams
from clpau.eval.swap_fidelity import (
    compare,
    r2,
    render_truth,
    ridge_cv,
    ridge_fit,
    ridge_predict,
    self_warps,
    ssim,
    swaps,
)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def test_ssim_and_l1_know_the_same_image_from_another():
    rng = np.random.default_rng(0)
    x = rng.random((32, 32, 3))
    assert ssim(x, x, data_range=1.0) == pytest.approx(1.0)
    noisy = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
    assert ssim(x, noisy, data_range=1.0) < 0.9
    scores = compare(np.stack([x, noisy]), np.stack([x, x]))
    assert scores["l1"][0] == 0 and scores["l1"][1] > 0.1 and scores["ssim"][0] > scores["ssim"][1]


def test_the_readout_recovers_a_linear_map_and_scores_the_mean_zero():
    rng = np.random.default_rng(1)
    z, w = rng.normal(size=(400, 16)), rng.normal(size=(16, 5))
    y = z @ w + 3.0
    fit = ridge_fit(z, y, alpha=1e-6)
    assert r2(ridge_predict(fit, z), y) == pytest.approx(1.0, abs=1e-6)
    assert r2(np.tile(y.mean(0), (len(y), 1)), y) == pytest.approx(0.0, abs=1e-12)
    # the penalty chosen on held-out groups: the smallest for a noiseless map, a large one for pure noise
    groups = np.repeat(np.arange(4), 100)
    assert ridge_cv(z, y, groups)[1] == 1.0
    assert ridge_cv(z, rng.normal(size=(400, 5)), groups)[1] >= 1e4


def test_a_warp_that_moves_nothing_makes_the_unmoved_reference():
    from clpau.train.pretrain import build_method

    torch.manual_seed(0)
    p = PretrainParams(method="clp")
    net = build_method(p).eval()
    x, y = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64)
    out = swaps(net, x, y)  # an untrained warp decoder starts at zero flow: ỹ is y itself
    assert torch.equal(out["swap"], y) and torch.equal(self_warps(net, x, y), x)
    assert out["flow"].shape == (3, 2, p.cir.grid, p.cir.grid)
    assert out["a_x"].shape == out["a_swap"].shape == (3, p.tcl.dim)
    with torch.no_grad():
        # φ = max_flow · tanh(bias) = 2/64: every pixel sampled 1 px to the right
        net.cir.au_flow.out.bias.copy_(torch.tensor([math.atanh(2 / 64 / p.cir.max_flow), 0.0]))
    moved = swaps(net, x, y)["swap"]
    assert torch.allclose(moved[..., :-1], y[..., 1:], atol=1e-5)


def test_the_rendered_truth_is_what_the_extracted_video_frame_shows(synth_clips, assets):
    """Rendering a labelled subject's own identity with the AU intensities and pose its video had at a frame, and
    aligning it as extract does, gives back that frame's crop (up to H.264's loss); another person making the same
    action is further from it."""
    from clpau.core.benchmarks import load_labelled
    from clpau.synth.render import MeshModel
    from clpau.video.detect import FaceModels, Template

    root = synth_clips.parent
    bench = BenchmarkParams(clips=root / "labelled_clips", labels_dir=root / "labels" / "labelled")
    labelled = load_labelled(bench, log=lambda *_: None)
    crops = labelled.crops()
    mesh = MeshModel(assets.au_to_mesh, assets.tessellation)
    faces, template, size = FaceModels(), Template.from_params(ExtractParams()), SynthParams().size
    own, other = [], []
    for i in np.random.default_rng(0).choice(len(labelled), 4, replace=False):
        truth = np.load(root / "raw" / "labelled" / f"{labelled.video[i]}.npz")
        f = labelled.frame[i]
        mine = render_truth(mesh, int(truth["identity_seed"]), truth["au"][f], truth["pose"][f], size, faces, template)
        theirs = render_truth(mesh, int(truth["identity_seed"]) + 1, truth["au"][f], truth["pose"][f], size, faces,
                              template)
        own.append(psnr(mine, crops[i]))
        other.append(psnr(theirs, crops[i]))
    assert min(own) > 24, own
    assert min(own) > max(other) + 3, (own, other)
