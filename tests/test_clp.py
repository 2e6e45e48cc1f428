"""The CLP losses on tiny tensors with answers known in advance."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from clpau.methods.backbones import max_pool_3x3_s2, resnet18, resnet_small
from clpau.methods.cir import CIR, CIRParams, FlowDecoder, identity_grid, swap_contrast, warp
from clpau.methods.clp import CLP
from clpau.methods.tcl import TCL, TCLParams, tcl_loss, temporal_margin


def _clp(cir: bool = True, **kw):
    """A small CLP (or TCL alone) with momentum keys and a queue unless told otherwise; `kw` of either section."""
    tcl = {"dim": 16, "queue_size": 12, "key_encoder": "momentum"} | {k: v for k, v in kw.items() if k in TCLParams.model_fields}
    if not cir:
        return TCL(resnet_small(), TCLParams(**tcl))
    cir_kw = {"grid": 8, "every": 1} | {k: v for k, v in kw.items() if k in CIRParams.model_fields}
    return CLP(resnet_small(), TCLParams(**tcl), CIRParams(**cir_kw))


def _batch(q, k, ids, others=None, identity=None) -> dict:
    """A loader's batch as the loop hands it to a method; `others` a tensor or a function that loads them."""
    batch = {"view_q": q, "view_k": k, "clip_id": ids, "others": others if callable(others) else lambda: others}
    if identity is not None:
        batch["identity"] = identity
    return batch


def test_resnet18_matches_torchvision_size():
    assert sum(p.numel() for p in resnet18(num_classes=1000).parameters()) == 11_689_512


def test_margin_grows_with_temporal_distance_and_caps():
    m = temporal_margin(torch.arange(8), m_max=0.3, delta_scale=4)
    assert m[0] == 0
    assert torch.all(m[1:5].diff() > 0)
    assert torch.allclose(m[4:], torch.full((4,), 0.3))


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_nce_by_hand_and_margins_push_distant_frames_harder():
    # one clip of 3 frames with orthogonal embeddings: sim = identity matrix
    q = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])[None]
    out = tcl_loss(q, q.clone(), torch.tensor([0]), tau=1.0, m_max=0.0, rank_weight=0.0)
    # each anchor: positive logit 1, two negatives logit 0 -> −log(e / (e + 2))
    assert out["nce"].item() == pytest.approx(-math.log(math.e / (math.e + 2)), abs=1e-6)
    with_margin = tcl_loss(q, q.clone(), torch.tensor([0]), tau=1.0, m_max=0.4, delta_scale=2, rank_weight=0.0)
    # anchor 0: negatives at Δ=1 (margin .2) and Δ=2 (.4) -> −log(e / (e + e^.2 + e^.4)), and so on
    m1, m2 = 0.2, 0.4
    expected = (2 * -math.log(math.e / (math.e + math.exp(m1) + math.exp(m2)))
                - math.log(math.e / (math.e + 2 * math.exp(m1)))) / 3
    assert with_margin["nce"].item() == pytest.approx(expected, abs=1e-6)
    assert with_margin["logits"].shape == (3, 3)


def test_in_clip_frames_are_negatives():
    q = _unit([1, 0], [0, 1])[None]
    apart = tcl_loss(q, q.clone(), torch.tensor([0]), m_max=0.0, rank_weight=0.0)["nce"]
    k_same = _unit([1, 0], [1, 0])[None]  # frame 1's key looks like frame 0
    confused = tcl_loss(q, k_same, torch.tensor([0]), m_max=0.0, rank_weight=0.0)["nce"]
    assert confused > apart + 0.5


def test_queue_keys_of_the_anchors_own_clip_are_excluded():
    q = _unit([1, 0, 0], [0, 1, 0])[None]
    base = tcl_loss(q, q.clone(), torch.tensor([7]), m_max=0.0, rank_weight=0.0)["nce"]
    queue = _unit([1, 0, 0], [0, 1, 0])  # copies of the anchors' own keys
    same = tcl_loss(q, q.clone(), torch.tensor([7]), queue, torch.tensor([7, 7]), m_max=0.0, rank_weight=0.0)
    other = tcl_loss(q, q.clone(), torch.tensor([7]), queue, torch.tensor([3, 3]), m_max=0.0, rank_weight=0.0)
    assert same["nce"].item() == pytest.approx(base.item(), abs=1e-6)
    assert other["nce"] > base + 0.5


def test_same_person_negatives_keep_only_the_anchors_own_persons_queue_keys():
    q = _unit([1, 0, 0], [0, 1, 0])[None]
    base = tcl_loss(q, q.clone(), torch.tensor([7]), m_max=0.0, rank_weight=0.0)["nce"]
    queue = _unit([1, 0, 0], [0, 1, 0])  # look like the anchors, from clip 3
    args = dict(m_max=0.0, rank_weight=0.0, identity=torch.tensor([5]))
    other_person = tcl_loss(q, q.clone(), torch.tensor([7]), queue, torch.tensor([3, 3]),
                            queue_identity=torch.tensor([4, 4]), **args)
    same_person = tcl_loss(q, q.clone(), torch.tensor([7]), queue, torch.tensor([3, 3]),
                           queue_identity=torch.tensor([5, 5]), **args)
    assert other_person["nce"].item() == pytest.approx(base.item(), abs=1e-6)
    assert same_person["nce"] > base + 0.5


def test_ranking_is_zero_when_similarity_falls_with_distance():
    # 1-D "time line" embeddings: similarity decreases with |t − t'|
    angles = torch.tensor([0.0, 0.4, 0.8, 1.2])
    q = torch.stack([angles.cos(), angles.sin()], 1)[None]
    ok = tcl_loss(q, q.clone(), torch.tensor([0]), rank_margin=0.0)["rank"]
    shuffled = tcl_loss(q, q[:, [0, 3, 2, 1]], torch.tensor([0]), rank_margin=0.0)["rank"]
    assert ok.item() == pytest.approx(0.0, abs=1e-7)
    assert shuffled > 0.01


def _smooth(n=2, side=64, seed=0):
    """Smooth random images (a blurred noise field): bilinear sampling between pixels stays faithful."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 3, side // 8, side // 8, generator=g)
    return F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)


def test_zero_flow_is_the_identity_warp():
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(warp(x, torch.zeros(2, 2, 16, 16)), x)  # power-of-two side: exact
    y = torch.randn(2, 3, 48, 48)
    assert torch.allclose(warp(y, torch.zeros(2, 2, 48, 48)), y, atol=1e-5)
    grid = identity_grid(1, 4, 4)
    assert grid[0, 0, 0].tolist() == [-0.75, -0.75] and grid[0, 3, 2].tolist() == [0.25, 0.75]  # x, then y


def test_a_known_shift_moves_the_image_and_is_recovered_by_gradient_descent():
    x = _smooth()
    shifted = torch.roll(x, shifts=(2, -3), dims=(2, 3))  # content 2 px down, 3 px left
    # warp(x, φ)(p) = x(p + φ): to move content by (dx, dy) px, sample from p − (dx, dy); 2 units = 64 px
    flow = torch.tensor([3.0, -2.0]).view(1, 2, 1, 1).expand(2, 2, 16, 16) * 2 / 64
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))  # where the roll wrapped nothing in
    assert torch.allclose(warp(x, flow)[inner], shifted[inner], atol=1e-5)
    # a constant flow fitted by L1 alone finds the shift
    phi = torch.zeros(1, 2, 1, 1, requires_grad=True)
    opt = torch.optim.Adam([phi], lr=0.01)
    for _ in range(300):
        loss = (warp(x, phi.expand(2, 2, 4, 4)) - shifted)[inner].abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert phi.detach().flatten() * 64 / 2 == pytest.approx(torch.tensor([3.0, -2.0]), abs=0.1)


def test_flow_decoders_have_their_shapes_and_start_at_rest():
    for grid in (4, 8, 16, 6):
        w = FlowDecoder(5, grid, max_flow=0.25)
        flow = w(torch.randn(3, 5), torch.randn(3, 5))
        assert flow.shape == (3, 2, grid, grid) and torch.equal(flow, torch.zeros_like(flow))
        with torch.no_grad():
            w.out.bias.fill_(100.0)
        assert w(torch.randn(3, 5), torch.randn(3, 5)).max().item() == pytest.approx(0.25)  # |φ| ≤ max_flow


def test_untrained_cir_reconstructs_by_the_identity_warp_and_its_terms_by_hand():
    torch.manual_seed(0)
    cir = CIR(6, CIRParams(frames=2, grid=8, lambda_flow=0.1, lambda_cycle=0.5))
    clips, other = _smooth(2 * 4, 32).view(2, 4, 3, 32, 32), _smooth(2, 32, seed=1)
    a = torch.randn(8, 6)
    codes = torch.randn(2, 6)
    terms, total = cir(lambda img: codes.repeat_interleave(len(img) // 2, 0), clips, a, other)
    # targets frames 0 and 3, sources half a clip away (2 and 1); nothing moves yet
    expected_self = torch.cat([clips[:, 2] - clips[:, 0], clips[:, 1] - clips[:, 3]], 1).abs().mean()
    assert terms["self"].item() == pytest.approx(expected_self.item(), rel=1e-5)
    assert terms["cycle"].item() == 0 and terms["flow"].item() == 0
    a_t = a.view(2, 4, 6)[:, [0, 3]].flatten(0, 1)
    swap = (1 - F.cosine_similarity(codes.repeat_interleave(2, 0), a_t, dim=1)).mean()
    assert terms["swap"].item() == pytest.approx(swap.item(), rel=1e-5)
    assert total.item() == pytest.approx(terms["self"].item() + 0.5 * terms["swap"].item(), rel=1e-5)


def test_the_swap_as_a_contrastive_positive_by_hand():
    # a swap whose code equals frame 1's: softmax over the clip's 3 frames with logits (0, 1, 0) / τ
    z_clip = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])[None]
    z_swap = _unit([0, 1, 0])
    loss = swap_contrast(z_swap, z_clip, torch.tensor([1]), tau=1.0)
    assert loss.item() == pytest.approx(-math.log(math.e / (math.e + 2)), abs=1e-6)
    assert swap_contrast(z_swap, z_clip, torch.tensor([0]), tau=1.0) > loss + 0.9  # the wrong frame costs more
    net = _clp(swap_loss="contrast")
    x = torch.randn(2, 4, 3, 64, 64)
    out = net(_batch(x, x, torch.tensor([0, 1]), torch.randn(2, 3, 64, 64)))
    assert out["swap"].item() > 0 and all(k in out for k in ("self", "cycle", "flow"))


def test_cir_trains_its_warp_to_move_pixels():
    """A few steps of the self term on a clip whose frames are shifted copies: the AU flow leaves zero and the
    reconstruction beats the unmoved source."""
    torch.manual_seed(0)
    base = _smooth(1, 32)
    frames = torch.cat([torch.roll(base, k, dims=3) for k in (0, 0, 2, 2)]).view(1, 4, 3, 32, 32).repeat(4, 1, 1, 1, 1)
    cir = CIR(4, CIRParams(frames=2, grid=8, lambda_swap=0, lambda_cycle=0, lambda_flow=0))
    a = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 1.0, 0, 0]]).repeat(4, 1)
    opt = torch.optim.Adam(cir.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        terms, total = cir(lambda img: torch.zeros(len(img), 4), frames, a, frames[:, 0])
        first = terms["self"].item() if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert terms["self"].item() < 0.5 * first, (first, terms["self"].item())


def test_clp_forward_backward_and_queue():
    torch.manual_seed(0)
    net = _clp()
    x = torch.randn(2, 4, 3, 64, 64)
    out = net(_batch(x, x + 0.01 * torch.randn_like(x), torch.tensor([0, 1]), torch.randn(2, 3, 64, 64)))
    out["loss"].backward()
    assert all(k in out for k in ("nce", "rank", "self", "swap", "cycle", "flow"))
    assert net.encoder.conv1.weight.grad is not None and net.key_encoder.conv1.weight.grad is None
    assert out["queue_fill"].item() == pytest.approx(8 / 12)
    assert set(net.queue.ids[:8].tolist()) == {0, 1}
    net(_batch(x, x, torch.tensor([2, 3]), torch.randn(2, 3, 64, 64)))
    assert int(net.queue.ptr) == 4  # 16 keys through a 12-slot ring
    # the first step saw an empty queue: its 12 slots are in the logits, all masked
    assert out["logits"].shape == (8, 4 + 12) and torch.isinf(out["logits"][:, 4:]).all()


def test_cir_every_skips_cir_and_the_optimizer_leaves_its_networks_alone_in_between():
    torch.manual_seed(0)
    net = _clp(every=2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(2, 4, 3, 64, 64)
    other = torch.randn(2, 3, 64, 64)
    first = net(_batch(x, x, torch.tensor([0, 1]), other))
    assert "self" in first and "flow" in first
    first["loss"].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    cir_nets = list(net.cir.parameters())
    after_cir = [p.detach().clone() for p in cir_nets]
    encoder_before = [p.detach().clone() for p in net.encoder.parameters()]
    second = net(_batch(x, x, torch.tensor([2, 3]), other))
    assert "self" not in second
    second["loss"].backward()
    opt.step()
    # no gradient for CIR's networks on a skipped step: AdamW moves them neither by momentum nor by weight decay
    assert all(p.grad is None for p in cir_nets)
    assert all(torch.equal(p, q) for p, q in zip(cir_nets, after_cir, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(net.encoder.parameters(), encoder_before, strict=True))
    assert "self" in net(_batch(x, x, torch.tensor([4, 5]), other))


def test_the_frames_of_other_people_are_loaded_only_on_cir_steps():
    torch.manual_seed(0)
    x, other = torch.randn(2, 4, 3, 64, 64), torch.randn(2, 3, 64, 64)
    loaded = []

    def load_others() -> torch.Tensor:
        loaded.append(True)
        return other

    net = _clp(every=3)
    steps = [net(_batch(x, x, torch.tensor([0, 1]), load_others)) for _ in range(6)]
    assert ["self" in s for s in steps] == [True, False, False, True, False, False] and len(loaded) == 2
    # the same terms as with the frames given
    torch.manual_seed(1)
    net = _clp().eval()
    given, lazy = net(_batch(x, x, torch.tensor([0, 1]), other)), net(_batch(x, x, torch.tensor([0, 1]), load_others))
    assert all(torch.equal(given[k], lazy[k]) for k in ("self", "swap", "cycle"))
    tcl_only = _clp(cir=False)
    tcl_only(_batch(x, x, torch.tensor([0, 1]), load_others))
    assert len(loaded) == 3  # once more for `lazy`, never for the model without CIR


def test_symmetric_loss_averages_both_directions_and_enqueues_one_view():
    def net(symmetric):
        torch.manual_seed(0)
        return _clp(cir=False, queue_size=64, symmetric=symmetric).train()

    torch.manual_seed(1)
    x, y = torch.randn(2, 4, 3, 64, 64), torch.randn(2, 4, 3, 64, 64)
    ids = torch.tensor([0, 1])
    one, both = net(False), net(True)
    # identical views: both directions are the same problem, so the symmetric loss equals the one-way loss
    assert both(_batch(x, x.clone(), ids))["loss"].item() == pytest.approx(one(_batch(x, x.clone(), ids))["loss"].item(),
                                                                           rel=1e-4)
    assert int(both.queue.fill) == int(one.queue.fill) == 8
    # different views: the average of (x → keys of y) and (y → keys of x) (eval mode: in training, batch norm sees
    # both views in one batch)
    fwd, back = net(False).eval()(_batch(x, y, ids))["loss"].item(), net(False).eval()(_batch(y, x, ids))["loss"].item()
    assert net(True).eval()(_batch(x, y, ids))["loss"].item() == pytest.approx((fwd + back) / 2, rel=1e-4)
    assert abs(fwd - back) > 1e-3


def test_online_keys_use_the_batch_as_negatives_with_no_queue_or_key_encoder():
    torch.manual_seed(0)
    net = _clp(cir=False, key_encoder="online").train()
    x, y = torch.randn(2, 4, 3, 64, 64), torch.randn(2, 4, 3, 64, 64)
    out = net(_batch(x, y, torch.tensor([0, 1])))
    out["loss"].backward()
    # per anchor: positive, 3 in-clip negatives, then the batch's 8 keys of which the own clip's 4 are masked
    assert out["logits"].shape == (8, 1 + 3 + 8)
    assert torch.isinf(out["logits"][:4, 4:8]).all() and torch.isfinite(out["logits"][:4, 8:]).all()
    assert "queue_fill" not in out and not hasattr(net, "queue") and not hasattr(net, "key_encoder")
    assert net.encoder.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("options", [{}, {"symmetric": True, "negatives": "same_person"}, {"key_encoder": "online"}])
def test_a_training_step_never_reads_a_value_back_from_the_device(options):
    # On the meta device tensors have shapes but no values: any step that reads one back (int(), .item(), .any(),
    # boolean indexing) raises. On a GPU each such read would stall the queue of launched kernels every step.
    with torch.device("meta"):
        net = _clp(every=2, **options)
        net._calls = 0  # the one read of the step counter, at the first step after construction or loading
        x, other, ids = torch.randn(2, 4, 3, 64, 64), torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
        for _ in range(2):  # a step with CIR and one without
            out = net(_batch(x, x, ids, other, ids))
            out["loss"].backward()
    assert out["loss"].shape == () and "self" not in out


def test_a_loaded_state_restarts_the_cir_schedule_from_its_step_count():
    torch.manual_seed(0)
    net = _clp(every=2)
    x, other = torch.randn(2, 4, 3, 64, 64), torch.randn(2, 3, 64, 64)
    for step in range(2):  # steps 0 (CIR) and 1: the next one, step 2, runs CIR
        net(_batch(x, x, torch.tensor([2 * step, 2 * step + 1]), other))
    resumed = _clp(every=2)
    resumed(_batch(x, x, torch.tensor([0, 1]), other))  # its own step 0: its next would be step 1, without CIR ...
    resumed.load_state_dict(net.state_dict())
    assert "self" in resumed(_batch(x, x, torch.tensor([4, 5]), other))  # ... but it continues at step 2


def _steps_of(net, steps=3):
    """Losses, keys in the queue and the key encoder's batch-norm statistics after a few training steps."""
    torch.manual_seed(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    losses = []
    for step in range(steps):
        x, y = torch.randn(2, 4, 3, 32, 32), torch.randn(2, 4, 3, 32, 32)
        out = net(_batch(x, y, torch.tensor([2 * step, 2 * step + 1])))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    return torch.tensor(losses), net.queue.keys.clone(), net.key_encoder.bn1.running_mean.clone()


def test_compiled_keys_are_the_uncompiled_keys():
    # Keys of momentum weights that change in place after every step, and the key encoder's own batch statistics:
    # the compiled forward must see each step's weights and update what the eager one updates.
    torch.manual_seed(0)
    eager = _clp(cir=False, queue_size=64, momentum=0.5).train()
    compiled = _clp(cir=False, queue_size=64, momentum=0.5, compile_keys=True).train()
    compiled.load_state_dict(eager.state_dict())
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints move between the two
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to the eager forward would pass the comparison unnoticed
        got = _steps_of(compiled)
    for a, b in zip(got, _steps_of(eager), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_without_a_working_compiler_the_keys_run_uncompiled():
    import torch._dynamo
    import torch._inductor.config as inductor

    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = _clp(cir=False, queue_size=64).train()
    fallback = _clp(cir=False, queue_size=64, compile_keys=True).train()
    fallback.load_state_dict(eager.state_dict())
    # no C++ compiler, and no compiled graph from an earlier test to reuse
    with inductor.patch({"cpp.cxx": ("clpau-no-such-compiler",), "fx_graph_cache": False}), \
            pytest.warns(RuntimeWarning, match="torch.compile failed, the key encoder runs uncompiled"):
        got = _steps_of(fallback)
    torch._dynamo.reset()
    for a, b in zip(got, _steps_of(eager), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (2, 3, 7, 9), (1, 2, 1, 1), (3, 5, 33, 32)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_gradient_free_bf16_max_pool_equals_torchs(shape, layout):
    torch.manual_seed(0)
    x = torch.randn(shape).to(torch.bfloat16).contiguous(memory_format=layout)
    with torch.no_grad():
        pooled = max_pool_3x3_s2(x)
    assert torch.equal(pooled, F.max_pool2d(x, 3, 2, 1))
    assert pooled.is_contiguous(memory_format=layout) or min(pooled.shape[-2:]) == 1


@pytest.mark.parametrize("trains", ["both", "encoder"])
def test_the_swap_trains_the_warp_decoder_only_when_told(trains):
    torch.manual_seed(0)
    cir = CIR(6, CIRParams(frames=2, grid=8, lambda_self=0, lambda_cycle=0, lambda_flow=0, swap_trains=trains))
    clips, other = _smooth(2 * 4, 32).view(2, 4, 3, 32, 32), _smooth(2, 32, seed=1)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 6))
    _, total = cir(encoder, clips, torch.randn(8, 6), other)
    total.backward()
    moved = cir.au_flow.out.weight.grad
    assert encoder[1].weight.grad.abs().sum() > 0  # the encoder learns from the swap either way
    assert (moved is not None and moved.abs().sum() > 0) == (trains == "both")


@pytest.mark.parametrize("flow", ["cross", "motion"])
def test_the_swaps_flow_and_code_target_by_hand(flow):
    """cross: ỹ = warp(y, W_au(a(y), a_t)) tied to a_t; motion: ỹ = warp(y, W_au(a_s, a_t)), A's own motion, and
    the code's change a(ỹ) − a(y) tied to A's a_t − a_s (cir.py's docstring), with a decoder that moves things."""
    torch.manual_seed(0)
    cir = CIR(6, CIRParams(frames=2, grid=8, lambda_cycle=0.5, swap_flow=flow))
    with torch.no_grad():
        cir.au_flow.out.weight.normal_(0, 0.05)
    clips, other = _smooth(2 * 4, 32).view(2, 4, 3, 32, 32), _smooth(2, 32, seed=1)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 6))
    a = encoder(clips.flatten(0, 1))
    terms, _ = cir(encoder, clips, a, other)
    codes = a.view(2, 4, 6)
    a_t, a_s = codes[:, [0, 3]].flatten(0, 1), codes[:, [2, 1]].flatten(0, 1)  # targets 0, 3; sources 2, 1
    y = other.repeat_interleave(2, 0)
    a_y = encoder(y)
    if flow == "cross":
        swapped = warp(y, cir.au_flow(a_y, a_t))
        swap = 1 - F.cosine_similarity(encoder(swapped), a_t, dim=1)
        back = warp(swapped, cir.au_flow(encoder(swapped), a_y))
    else:
        swapped = warp(y, cir.au_flow(a_s, a_t))
        swap = 1 - F.cosine_similarity(encoder(swapped) - a_y, a_t - a_s, dim=1)
        back = warp(swapped, cir.au_flow(a_t, a_s))
    assert not torch.equal(swapped, y)  # the decoder moves B
    assert terms["swap"].item() == pytest.approx(swap.mean().item(), rel=1e-5)
    assert terms["cycle"].item() == pytest.approx((back - y).abs().mean().item(), rel=1e-5)
