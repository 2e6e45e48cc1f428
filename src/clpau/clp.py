"""CLP: Contrastive Learning of Person-independent representations for facial AU detection.

Yong Li, Shiguang Shan, IEEE TIP 32 (2023) 3212-3225 (arXiv 2403.03400). Only the abstract is public; this module
implements the interpretation fixed in DESIGN.md §2. Notation: a clip X = (x_1 … x_T) of consecutive aligned face
frames of one person, B clips per batch.

Networks
    f   backbone (ResNet) -> pooled feature h; h is the representation evaluated downstream
    g   AU projector (MLP): a = g(h) is the AU code, z = a / |a| the contrastive embedding
    f', g'  momentum (EMA) copies giving keys k; a queue holds K past keys with the id of the clip they came from
    e   identity encoder on another frame of the same clip -> u (what is constant in the clip: who, lighting)
    D   decoder D(a, u) -> image at reduced resolution

TCL — margin-based temporal contrastive learning (`tcl_loss`). For the query q_t of frame t (one augmentation) the
positive is its own key k_t (another augmentation of the same frame); the negatives are the other frames of the
same clip, k_t' (same person and background: only facial action and pose tell them apart), and the queue keys n_j
from *other* clips (a queue key of the anchor's own clip is masked out). Each in-clip negative's logit is raised
by a margin that grows with the temporal distance Δ = |t − t'|:

    m(Δ) = m_max · min(1, Δ / Δ_scale)
    s_pos = q_t·k_t / τ,   s_t' = (q_t·k_t' + m(|t − t'|)) / τ,   s_j = q_t·n_j / τ
    L_nce = −log( exp(s_pos) / (exp(s_pos) + Σ_{t'≠t} exp(s_t') + Σ_j exp(s_j)) )

so near frames, which share most of their AU state, are pushed away gently and distant frames firmly. A ranking
hinge makes similarity fall with temporal distance, over all pairs Δ(t, t') < Δ(t, t''):

    L_rank = mean max(0, q_t·k_t'' − q_t·k_t' + δ_rank)
    L_TCL = L_nce + w_rank · L_rank

CIR — cross-identity reconstruction (`cir_losses`). With u_A = e(x_s) from another frame s of the same clip and
u_B = e(y) from a frame y of another identity B:

    L_self = |D(a_t, u_A) − x_t|_1              a_t must carry the frame's facial action
    ỹ = D(a_t, u_B)                             "B making A's facial action"
    L_swap = 1 − cos(g(f(ỹ)), sg(a_t))          the same action in another person -> the same AU code
    L_cyc  = |D(g(f(ỹ)), u_A) − x_t|_1          and back to A
    L_id   = 1 − cos(e*(ỹ), sg(u_B))            and ỹ must really be B (e* = e with its weights held fixed)
    L = L_TCL + λ_self L_self + λ_swap L_swap + λ_cyc L_cyc + λ_id L_id

(sg = stop-gradient; images compared at the decoder's resolution). Without L_id the decoder may ignore u and let
ỹ ≈ x_t, and then L_swap and L_cyc hold for any encoder (measured: swap 0.04 while self ≈ cycle ≈ 0.41); with it,
a(ỹ) = a_t asks the AU code of *another person* making the action to be the same. CIR runs every `cir_every`-th
step (on this CPU a step with CIR takes 1.45x a TCL step with one frame per clip, 1.75x with two). `tcl` and
`cir` ablations switch one half off.

`margin_by: motion` drives the margins and the ranking by the measured landmark motion between the two frames (the
batch's "motion", data.py) instead of Δ. `tcl_fn` swaps the margin reading for another one with the same signature: `time_contrast.time_contrastive_loss`
(near frames positive, far frames negative, the frames between left out; `pretrain.tcl_variant: time_contrast`).

Options beyond DESIGN §2, all off by default (README: what each did to F1): `symmetric` — both views are queries,
each against the other's keys (MoCo v3); `online_keys` — keys from the online networks and the batch's other clips
as the negatives instead of the momentum encoder and the queue (SimCLR's framework under TCL's in-clip terms;
always symmetric); `same_person` — queue negatives only from the anchor's own person.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .hardware import isolate_compile_cache


def temporal_margin(delta: torch.Tensor, m_max: float, delta_scale: float) -> torch.Tensor:
    """m(Δ) = m_max · min(1, Δ / Δ_scale): zero for the frame itself, growing with distance, capped."""
    return m_max * torch.clamp(delta.float() / delta_scale, max=1.0)


def tcl_loss(q: torch.Tensor, k: torch.Tensor, clip_ids: torch.Tensor, queue: torch.Tensor | None = None,
             queue_ids: torch.Tensor | None = None, *, tau: float = 0.1, m_max: float = 0.3,
             delta_scale: float = 4.0, rank_margin: float = 0.05, rank_weight: float = 0.5,
             identity: torch.Tensor | None = None, queue_identity: torch.Tensor | None = None,
             motion: torch.Tensor | None = None, motion_scale: float = 0.03) -> dict:
    """Margin-based temporal contrastive loss (module docstring).

    q, k: (B, T, d) L2-normalised queries and keys of B clips of T frames; clip_ids: (B,) global clip ids;
    queue: (K, d) normalised keys with their clip ids queue_ids (K,; −1 marks an empty slot, never a negative).
    With `identity` (B,) and `queue_identity` (K,), only queue keys of the anchor's own person are negatives
    (`negatives: same_person`). With `motion` (B, T, T), the measured landmark motion between every two frames of
    each clip, margins and ranking follow it instead of Δ (`margin_by: motion`): m = m_max · min(1, motion /
    motion_scale), and frames that moved less from the anchor should stay more similar. Returns the loss terms and,
    like MoCo's forward, the logits of every anchor with the positive in column 0.
    """
    # No step here reads a value back from the device (no boolean indexing, `.any()` or `.item()`): on a GPU each
    # such read stalls the queue of launched kernels until it drains.
    b, t, _ = q.shape
    sim = torch.einsum("btd,bsd->bts", q, k)  # (B, T, T): anchor t against every frame s of its clip
    idx = torch.arange(t, device=q.device)
    delta = (idx[:, None] - idx[None, :]).abs()
    if motion is None:
        margin = temporal_margin(delta, m_max, delta_scale)  # diagonal (the positive) gets 0
    else:
        margin = m_max * torch.clamp(motion.to(sim.dtype) / motion_scale, max=1.0)  # (B, T, T), diagonal 0
    pos = sim.diagonal(dim1=1, dim2=2).reshape(b * t, 1)
    j = torch.arange(t - 1, device=q.device)
    others = j[None, :] + (j[None, :] >= idx[:, None]).long()  # (T, T−1): row t's columns without t itself
    in_clip = (sim + margin).gather(2, others.expand(b, t, t - 1)).reshape(b * t, t - 1)
    logits = [pos / tau, in_clip / tau]
    if queue is not None and len(queue):
        excluded = (queue_ids[None, :] == clip_ids[:, None]) | (queue_ids[None, :] < 0)  # id −1: an empty slot
        if identity is not None:
            excluded |= queue_identity[None, :] != identity[:, None]
        # 1/τ on the (B·T, d) queries rather than the (B·T, K) logits, and one (B, K) mask broadcast over each
        # clip's frames: the queue's logits are the loss's largest tensors (1.6 ms of a 4 ms loss on this CPU)
        qn = torch.einsum("btd,kd->btk", q / tau, queue.to(q.dtype)).masked_fill(excluded[:, None], float("-inf"))
        logits.append(qn.reshape(b * t, -1))
    logits = torch.cat(logits, 1)
    labels = torch.zeros(b * t, dtype=torch.long, device=q.device)
    nce = F.cross_entropy(logits, labels)
    # ranking: for anchor t, every pair (s1, s2) with Δ(t,s1) < Δ(t,s2) should have sim(t,s1) > sim(t,s2) + δ
    if t > 1 and motion is not None:  # the same ordering by measured motion (per clip)
        closer = motion[:, :, :, None] < motion[:, :, None, :]  # (B, T, s1, s2)
        gap = sim[:, :, None, :] - sim[:, :, :, None] + rank_margin
        rank = (F.relu(gap) * closer).sum() / closer.sum().clamp_min(1)
    elif t > 1:  # a clip of 2 or more frames always has such a pair
        closer = delta[:, :, None] < delta[:, None, :]  # (T, s1, s2)
        gap = sim[:, :, None, :] - sim[:, :, :, None] + rank_margin  # sim(t,s2) − sim(t,s1) + δ
        rank = (F.relu(gap) * closer).sum() / (b * closer.sum())
    else:
        rank = sim.new_zeros(())
    return {"loss": nce + rank_weight * rank, "nce": nce, "rank": rank, "logits": logits, "labels": labels}


def cir_losses(encode_au: Callable, decode: Callable, x: torch.Tensor, a: torch.Tensor, u_a: torch.Tensor,
               u_b: torch.Tensor, encode_id: Callable | None = None) -> dict:
    """Cross-identity reconstruction terms (module docstring) for frames x (N, 3, H, W) with AU codes a (N, c),
    the identity code u_a = e(another frame of the same clip) and u_b = e(a frame of another person), (N, c_id).
    `encode_au` maps images to AU codes (g∘f), `decode` (a, u) to images, `encode_id` images to identity codes with
    e's weights held fixed (no L_id when None)."""
    recon = decode(a, u_a)
    target = F.interpolate(x, size=recon.shape[-2:], mode="area") if recon.shape[-2:] != x.shape[-2:] else x
    self_rec = (recon - target).abs().mean()
    swapped = decode(a, u_b)
    a_swapped = encode_au(_to_input(swapped, x))
    swap = (1 - F.cosine_similarity(a_swapped, a.detach(), dim=1)).mean()
    cycle = (decode(a_swapped, u_a) - target).abs().mean()
    out = {"self": self_rec, "swap": swap, "cycle": cycle}
    if encode_id is not None:
        out["id"] = (1 - F.cosine_similarity(encode_id(swapped), u_b.detach(), dim=1)).mean()
    return out


def _to_input(img: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Decoder output back at the encoder's input size."""
    if img.shape[-2:] == like.shape[-2:]:
        return img
    return F.interpolate(img, size=like.shape[-2:], mode="bilinear", align_corners=False)


def compiled_or_eager(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """`fn` compiled by torch.compile, falling back to `fn` itself (with a warning) when compiling fails — no C++
    compiler on the machine, an unsupported backend: a missing compiler must cost speed, never the run. An error of
    `fn` itself is raised again by the eager call."""
    isolate_compile_cache()  # kernels cached under another ISA ceiling aborted the process
    compiled: Callable | None = torch.compile(fn, dynamic=False)

    def call(x: torch.Tensor) -> torch.Tensor:
        nonlocal compiled
        if compiled is not None:
            try:
                return compiled(x)
            except Exception as err:  # noqa: BLE001 — any compiler failure; fn's own errors recur below
                warnings.warn(f"torch.compile failed, the key encoder runs uncompiled: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}", RuntimeWarning, stacklevel=2)
                compiled = None
        return fn(x)
    return call


class Projector(nn.Sequential):
    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


class IdentityEncoder(nn.Sequential):
    """e: a small CNN on a half-resolution image; what stays constant within a clip (who, lighting) needs no fine
    detail, and the pooling keeps it cheap next to the backbone."""

    def __init__(self, dim: int = 64):
        def block(i, o):
            return [nn.Conv2d(i, o, 3, 2, 1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
        super().__init__(nn.AvgPool2d(2), *block(3, 32), *block(32, 64), *block(64, 128), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(128, dim))


class Decoder(nn.Module):
    """D(a, u) -> image of side `size` (a power of two ≥ 8), values in the input's normalised range."""

    def __init__(self, au_dim: int, id_dim: int, size: int = 32):
        super().__init__()
        self.fc = nn.Linear(au_dim + id_dim, 128 * 4 * 4)
        ups = []
        ch = 128
        side = 4
        while side < size:
            ups += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, max(ch // 2, 16), 3, 1, 1),
                    nn.BatchNorm2d(max(ch // 2, 16)), nn.ReLU(inplace=True)]
            ch = max(ch // 2, 16)
            side *= 2
        self.up = nn.Sequential(*ups, nn.Conv2d(ch, 3, 3, 1, 1))

    def forward(self, a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(torch.cat([a, u], 1)).view(-1, 128, 4, 4))


class CLP(nn.Module):
    """The whole method: encoders, momentum copies, queue, CIR networks; `forward` returns the loss terms.

    Defaults (our choice; the paper's are unknown): d=128, K=4096, m=0.99, τ=0.1, m_max=0.3, Δ_scale=4,
    δ_rank=0.05, w_rank=0.5, λ_self=1, λ_swap=0.5, λ_cyc=0.5, λ_id=0 (no gain measured), decoder at 32 px, CIR on 2 frames per
    clip, every step.
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, *, dim: int = 128, queue_size: int = 4096,
                 momentum: float = 0.99, use_tcl: bool = True, use_cir: bool = True, id_dim: int = 64,
                 decoder_size: int = 32, tcl: dict | None = None, lambdas: tuple[float, ...] = (1, .5, .5, 0),
                 cir_frames: int = 2, cir_every: int = 1, same_person: bool = False, symmetric: bool = False,
                 online_keys: bool = False, compile_keys: bool = False,
                 gather: Callable[[torch.Tensor], torch.Tensor] | None = None, tcl_fn: Callable | None = None):
        super().__init__()
        self.encoder = backbone
        self.projector = Projector(feat_dim, 2 * dim, dim)
        self.key_encoder = copy.deepcopy(backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.momentum, self.use_tcl, self.use_cir, self.cir_frames = momentum, use_tcl, use_cir, cir_frames
        # CIR skips steps only between TCL steps: without TCL, a skipped step would train nothing
        self.cir_every = cir_every if use_tcl else 1
        self.symmetric, self.online_keys = symmetric, online_keys
        self.tcl_args = tcl or {}
        # the in-clip loss: the margin reading (tcl_loss) or another one with its signature (time_contrast.py)
        self.tcl_fn = tcl_fn or tcl_loss
        self.lambdas = lambdas
        self.gather = gather or (lambda t: t)  # all_gather across ranks under DDP
        # the keys' forward never needs a backward, so a compiled graph can fuse batch norm, ReLU and pooling into
        # the convolutions' passes (kept as a plain function, not a submodule: the state dict's keys stay the same)
        self._keys = compiled_or_eager(self._key_forward) if compile_keys else self._key_forward
        if use_cir:
            self.identity_encoder = IdentityEncoder(id_dim)
            self.decoder = Decoder(dim, id_dim, decoder_size)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ids", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_identity", torch.full((queue_size,), -1, dtype=torch.long))
        self.same_person = same_person
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_fill", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # forward calls, for `cir_every`
        # a host copy of `steps` (reading the buffer every step would wait for the device), read again after a
        # state dict is loaded (a resumed run)
        self._calls: int | None = None
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "_calls", None))

    def au_code(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def frozen_identity(self, x: torch.Tensor) -> torch.Tensor:
        """e(x) with e's weights (and batch statistics) held fixed: L_id trains the decoder, not e — an identity
        encoder free to change could satisfy it by mapping everything to one code."""
        e = self.identity_encoder
        params = {k: v.detach() for k, v in e.named_parameters()}
        buffers = dict(e.named_buffers())
        was_training = e.training
        e.eval()
        try:
            return torch.func.functional_call(e, {**params, **buffers}, (x,))
        finally:
            e.train(was_training)

    def _key_forward(self, views: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_projector(self.key_encoder(views)), dim=1)

    @torch.no_grad()
    def _momentum_update(self) -> None:
        """θ' ← m·θ' + (1 − m)·θ, as one fused update over all tensors (a loop costs two kernels per tensor)."""
        online = [*self.encoder.parameters(), *self.projector.parameters()]
        target = [*self.key_encoder.parameters(), *self.key_projector.parameters()]
        torch._foreach_lerp_(target, online, 1 - self.momentum)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor, ids: torch.Tensor, identity: torch.Tensor) -> None:
        keys, ids, identity = self.gather(keys).to(self.queue.dtype), self.gather(ids), self.gather(identity)
        n, size = len(keys), len(self.queue)
        if n >= size:
            keys, ids, identity, n = keys[-size:], ids[-size:], identity[-size:], size
        # pointer arithmetic on the device: no read-back of the pointer per step
        idx = (torch.arange(n, device=keys.device) + self.queue_ptr) % size
        self.queue[idx] = keys
        self.queue_ids[idx] = ids
        self.queue_identity[idx] = identity
        self.queue_ptr.copy_((self.queue_ptr + n) % size)
        self.queue_fill.copy_(torch.clamp(self.queue_fill + n, max=size))

    def forward(self, view_q: torch.Tensor, view_k: torch.Tensor, clip_ids: torch.Tensor,
                other_identity: torch.Tensor | Callable[[], torch.Tensor] | None = None,
                identity: torch.Tensor | None = None, motion: torch.Tensor | None = None) -> dict:
        """view_q, view_k: (B, T, 3, H, W) two augmentations of the same clips; clip_ids (B,);
        other_identity: (B, 3, H, W) one frame of another person per clip (CIR), or a function that loads them,
        called only when this step runs CIR; identity (B,) the clips' person ids (needed with same_person);
        motion (B, T, T) landmark motion within each clip, for the motion-driven margin."""
        b, t = view_q.shape[:2]
        flat_q = view_q.flatten(0, 1)
        online = self.online_keys and self.use_tcl
        symmetric = (self.symmetric or online) and self.use_tcl
        if self.use_tcl and not online:
            # the keys before the queries: the queries' activations, which the backward reads next, are then the
            # latest in the cache (on this CPU 1 ms of a 75 ms step; the same numbers either way)
            with torch.no_grad():
                self._momentum_update()
                keys = self._keys(torch.cat([view_k.flatten(0, 1), flat_q]) if symmetric else view_k.flatten(0, 1))
        # symmetric: both views are queries (one backbone pass over both), each against the other's keys
        a_both = self.au_code(torch.cat([flat_q, view_k.flatten(0, 1)]) if symmetric else flat_q)
        a = a_both[: b * t]  # (B·T, d) AU codes of view_q
        out: dict = {}
        total = a.new_zeros(())
        if self.use_tcl:
            if identity is None:
                if self.same_person:
                    raise ValueError("negatives: same_person needs the clips' identity ids")
                identity = torch.full_like(clip_ids, -1)
            frame_ids, frame_identity = clip_ids.repeat_interleave(t), identity.repeat_interleave(t)
            if online:  # SimCLR-style: keys from the online networks, other clips' negatives from the batch
                keys = F.normalize(torch.cat([a_both[b * t:], a_both[: b * t]]), dim=1)
            else:
                # a copy (in the queries' precision, so it is also the cast): the loss's backward needs the keys as
                # they were before this step's enqueue
                queue = (self.queue.to(a.dtype, copy=True), self.queue_ids, self.queue_identity)  # empty: id −1
            pairs = [(a, keys[: b * t])]  # `a` itself, not a second slice: the same autograd graph as one-way
            if symmetric:
                pairs.append((a_both[b * t:], keys[b * t:]))
            parts = []
            for qa, k in pairs:
                negatives = (k, frame_ids, frame_identity) if online else queue
                person = {"identity": identity, "queue_identity": negatives[2]} if self.same_person else {}
                if motion is not None:
                    person["motion"] = motion
                parts.append(self.tcl_fn(F.normalize(qa, dim=1).view(b, t, -1), k.view(b, t, -1), clip_ids,
                                         negatives[0], negatives[1], **self.tcl_args, **person))
            terms = {name: sum(p[name] for p in parts) / len(parts) for name in ("loss", "nce", "rank")}
            if not online:
                self._enqueue(keys[: b * t], frame_ids, frame_identity)
            out.update(tcl=terms["loss"], nce=terms["nce"], rank=terms["rank"], logits=parts[0]["logits"],
                       labels=parts[0]["labels"])
            total = total + terms["loss"]
        if self._calls is None:
            self._calls = int(self.steps)
        cir_now = self.use_cir and self._calls % self.cir_every == 0
        self._calls += 1
        self.steps += 1
        # a step without CIR leaves its networks out of the graph: no gradient, so the optimizer leaves them alone
        # until the next CIR step (under DDP, pretrain.py lets parameters go without a gradient)
        if cir_now:
            if callable(other_identity):
                other_identity = other_identity()
            if other_identity is None:
                raise ValueError("CIR needs a frame of another identity per clip (other_identity)")
            # CIR on `cir_frames` frames per clip: each frame already gives the full signal, and re-encoding every
            # swapped frame would cost another backbone pass over the whole batch.
            n = min(self.cir_frames, t)
            pick = torch.linspace(0, t - 1, n, device=view_q.device).round().long()  # from frame 0, evenly spaced
            x = view_q[:, pick].flatten(0, 1)
            a_sel = a.view(b, t, -1)[:, pick].flatten(0, 1)
            # one identity code per clip (it is what the clip's frames share), from the frame half a clip after the
            # first picked one (frame 0), and one per other person: one identity-encoder pass over 2·B frames
            u_a, u_b = self.identity_encoder(torch.cat([view_q[:, t // 2], other_identity])
                                             ).repeat_interleave(n, 0).view(2, b * n, -1)
            ls, lw, lc, li = self.lambdas
            terms = cir_losses(self.au_code, self.decoder, x, a_sel, u_a, u_b,
                               self.frozen_identity if li > 0 else None)
            out.update(terms)
            total = total + ls * terms["self"] + lw * terms["swap"] + lc * terms["cycle"] + li * terms.get("id", 0.0)
        out["loss"] = total
        out["queue_fill"] = self.queue_fill.float() / len(self.queue)
        return out
