"""TCL — margin-based temporal contrastive learning inside a clip, CLP's first half (Li & Shan, IEEE TIP 32 (2023)
3212-3225; our reading, docs/method.md). A clip X = (x_1 … x_T) of consecutive aligned face frames of one person,
B clips a batch; q are the queries' embeddings, k the keys' (below: where the keys come from).

For the query q_t of frame t (one augmentation) the positive is its own key k_t (another augmentation of the same
frame); the negatives are the other frames of the same clip, k_t' (same person and background: only facial action
and pose tell them apart), and the negatives n_j from *other* clips (the queue's, or the batch's other clips; one
of the anchor's own clip is masked out). Each in-clip negative's logit is raised by a margin that grows with the
temporal distance Δ = |t − t'|:

    m(Δ) = m_max · min(1, Δ / Δ_scale)
    s_pos = q_t·k_t / τ,   s_t' = (q_t·k_t' + m(|t − t'|)) / τ,   s_j = q_t·n_j / τ
    L_nce = −log( exp(s_pos) / (exp(s_pos) + Σ_{t'≠t} exp(s_t') + Σ_j exp(s_j)) )

so near frames, which share most of their AU state, are pushed away gently and distant frames firmly. A ranking
hinge makes similarity fall with temporal distance, over all pairs Δ(t, t') < Δ(t, t''):

    L_rank = mean max(0, q_t·k_t'' − q_t·k_t' + δ_rank)
    L_TCL = L_nce + w_rank · L_rank

`motion` drives the margins and the ranking by the measured landmark motion between the two frames
(`margin_by: motion`) instead of Δ. Another reading with the same signature: `time_contrast.time_contrastive_loss`
(`variant: time_contrast`).

The method `TCL` (`pretrain.method: tcl`, params `pretrain.tcl`): f the backbone, g the AU projector, a = g(f(x))
the AU code, q = a / |a|. The keys k and the other clips' negatives n_j come from
- `key_encoder: online` (the default): the online networks themselves, both views queries against the other's keys
  (SimCLR's framework under the in-clip terms), the negatives the batch's other clips — gathered from every process
  under DDP, with their gradient, so the loss does not change with the number of GPUs;
- `key_encoder: momentum`: momentum copies f', g' (θ' ← m·θ' + (1 − m)·θ) and a queue of the K latest keys (MoCo's
  dictionary; the first reading, docs/method.md), one-way unless `symmetric`.
`negatives: same_person` keeps only the anchor's own person's clips among the negatives.

Defaults (ours; the paper's are unknown): d = 128, τ = 0.1, m_max = 0.3, Δ_scale = 4, δ_rank = 0.05,
w_rank = 0.5; online keys; for momentum keys K = 2048, m = 0.99.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from clpau.core.params import _Section
from clpau.methods.base import Method
from clpau.methods.heads import KeyQueue, Projector, compiled_or_eager, gather_with_grad, momentum_update
from clpau.methods.time_contrast import time_contrastive_loss


class TCLParams(_Section):
    """`pretrain.tcl`: the in-clip temporal contrast (tcl, and clp's first half)."""
    dim: int = Field(128, ge=8, description="size of the AU code a = g(f(x))")
    tau: float = Field(0.1, gt=0)
    variant: Literal["margin", "time_contrast"] = Field(
        "margin", description="the in-clip loss: every other frame a negative with a margin growing with Δ "
                              "(tcl_loss), or frames within pos_window positive and from neg_window on negative "
                              "(time_contrast.py)")
    m_max: float = Field(0.3, ge=0, description="margin: largest margin on an in-clip negative's logit ...")
    delta_scale: float = Field(4.0, gt=0, description="... reached at this temporal distance (frames)")
    rank_margin: float = Field(0.05, ge=0)
    rank_weight: float = Field(0.5, ge=0)
    margin_by: Literal["time", "motion"] = Field(
        "time", description="margins and ranking by temporal distance Δ, or by the measured landmark motion between "
                            "the two frames (share of the crop side)")
    motion_scale: float = Field(0.03, gt=0, description="margin_by motion: landmark motion at which the margin "
                                                        "reaches m_max")
    pos_window: int = Field(1, ge=0, description="time_contrast: frames at most this far from the anchor are positives")
    neg_window: int = Field(3, ge=1, description="time_contrast: frames at least this far are negatives")
    key_encoder: Literal["online", "momentum"] = Field(
        "online", description="keys from the online networks with the batch's other clips as negatives (the "
                              "study's best, docs/results.md; always symmetric), or from a momentum encoder with a "
                              "queue (the first reading, docs/method.md)")
    negatives: Literal["all", "same_person"] = Field(
        "all", description="other clips' negatives: every one, or only the anchor's own person's")
    symmetric: bool = Field(False, description="momentum keys: both views are queries against the other's keys (MoCo "
                                               "v3), twice the contrastive signal for ~1.5x the step time")
    queue_size: int = Field(2048, ge=1, description="momentum keys: the queue's length (keys of the last 16 steps)")
    momentum: float = Field(0.99, gt=0, lt=1, description="momentum keys: the EMA's m")
    compile_keys: bool = Field(False, description="momentum keys: torch.compile the key encoder's gradient-free "
                                                  "forward (no gain measured in the CPU loop; for GPUs)")

    @model_validator(mode="after")
    def _check(self) -> TCLParams:
        if self.variant == "time_contrast" and self.margin_by == "motion":
            raise ValueError("margin_by: motion belongs to variant: margin (time_contrast has no margin)")
        if self.variant == "time_contrast" and not self.pos_window < self.neg_window:
            raise ValueError(f"time_contrast needs pos_window < neg_window, got {self.pos_window} and "
                             f"{self.neg_window}")
        return self


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


class TCL(Method):
    """f, g and the keys of the in-clip temporal contrast (module docstring); `step` returns loss, nce, rank."""

    name = "tcl"
    summary = "CLP's in-clip temporal contrast with margins (the default)"
    sections = ("tcl",)

    def __init__(self, backbone: nn.Module, tcl: TCLParams | None = None, *, feat_dim: int | None = None):
        super().__init__()
        p = tcl or TCLParams()
        self.encoder = backbone
        self.projector = Projector(feat_dim or backbone.out_dim, 2 * p.dim, p.dim)
        self.online, self.same_person = p.key_encoder == "online", p.negatives == "same_person"
        self.symmetric = p.symmetric or self.online
        self.uses_motion = p.margin_by == "motion"
        if p.variant == "time_contrast":
            self.loss_fn, self.loss_args = time_contrastive_loss, {"tau": p.tau, "pos_window": p.pos_window,
                                                                   "neg_window": p.neg_window}
        else:
            self.loss_fn, self.loss_args = tcl_loss, {"tau": p.tau, "m_max": p.m_max, "delta_scale": p.delta_scale,
                                                      "rank_margin": p.rank_margin, "rank_weight": p.rank_weight}
            if self.uses_motion:
                self.loss_args["motion_scale"] = p.motion_scale
        self.gather = None  # the loop's all-gather across processes (momentum keys' queue)
        if not self.online:
            self.momentum = p.momentum
            self.key_encoder = copy.deepcopy(backbone).requires_grad_(False)
            self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
            self.queue = KeyQueue(p.queue_size, p.dim)
            # the keys' forward never needs a backward, so a compiled graph can fuse batch norm, ReLU and pooling
            # into the convolutions' passes (a plain function, not a submodule: the state dict stays the same)
            self._keys = compiled_or_eager(self._key_forward) if p.compile_keys else self._key_forward

    def au_code(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def _key_forward(self, views: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_projector(self.key_encoder(views)), dim=1)

    def contrast(self, view_q: torch.Tensor, view_k: torch.Tensor, clip_ids: torch.Tensor,
                 identity: torch.Tensor | None = None, motion: torch.Tensor | None = None
                 ) -> tuple[dict, torch.Tensor]:
        """view_q, view_k (B, T, 3, H, W) two augmentations of the same clips; clip_ids, identity (B,); motion
        (B, T, T). Returns the terms (loss, nce, rank, logits, labels) and the AU codes of view_q (B·T, d)."""
        b, t = view_q.shape[:2]
        flat_q = view_q.flatten(0, 1)
        if not self.online:
            # the keys before the queries: the queries' activations, which the backward reads next, are then the
            # latest in the cache (on this CPU 1 ms of a 75 ms step; the same numbers either way)
            with torch.no_grad():
                momentum_update([self.encoder, self.projector], [self.key_encoder, self.key_projector],
                                self.momentum)
                keys = self._keys(torch.cat([view_k.flatten(0, 1), flat_q]) if self.symmetric
                                  else view_k.flatten(0, 1))
        # symmetric: both views are queries (one backbone pass over both), each against the other's keys
        a_both = self.au_code(torch.cat([flat_q, view_k.flatten(0, 1)]) if self.symmetric else flat_q)
        a = a_both[: b * t]  # (B·T, d) AU codes of view_q
        if identity is None:
            if self.same_person:
                raise ValueError("negatives: same_person needs the clips' identity ids")
            identity = torch.full_like(clip_ids, -1)
        frame_ids, frame_identity = clip_ids.repeat_interleave(t), identity.repeat_interleave(t)
        if self.online:  # keys from the online networks, other clips' negatives from the batch (of every process)
            keys = F.normalize(torch.cat([a_both[b * t:], a_both[: b * t]]), dim=1)
        else:
            # a copy (in the queries' precision, so it is also the cast): the loss's backward needs the keys as
            # they were before this step's enqueue
            queue = self.queue.snapshot(a.dtype)
        pairs = [(a, keys[: b * t])]  # `a` itself, not a second slice: the same autograd graph as one-way
        if self.symmetric:
            pairs.append((a_both[b * t:], keys[b * t:]))
        parts = []
        for qa, k in pairs:
            if self.online:
                negatives = (gather_with_grad(k), gather_with_grad(frame_ids), gather_with_grad(frame_identity))
            else:
                negatives = queue
            extra = {"identity": identity, "queue_identity": negatives[2]} if self.same_person else {}
            if motion is not None:
                extra["motion"] = motion
            parts.append(self.loss_fn(F.normalize(qa, dim=1).view(b, t, -1), k.view(b, t, -1), clip_ids,
                                      negatives[0], negatives[1], **self.loss_args, **extra))
        terms = {name: sum(p[name] for p in parts) / len(parts) for name in ("loss", "nce", "rank")}
        if not self.online:
            self.queue.push(keys[: b * t], frame_ids, frame_identity, self.gather)
            terms["queue_fill"] = self.queue.share_filled()
        terms.update(logits=parts[0]["logits"], labels=parts[0]["labels"])
        return terms, a

    def step(self, batch: dict) -> dict:
        terms, _ = self.contrast(batch["view_q"], batch["view_k"], batch["clip_id"], batch.get("identity"),
                                 batch.get("motion"))
        return terms
