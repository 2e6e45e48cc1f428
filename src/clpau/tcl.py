"""TCL — margin-based temporal contrastive learning inside a clip, CLP's first half (Li & Shan, IEEE TIP 32 (2023)
3212-3225; our reading, DESIGN.md §2). A clip X = (x_1 … x_T) of consecutive aligned face frames of one person,
B clips a batch; q are the queries' embeddings, k the keys' (clp.py says where the keys come from).

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
(`margin_by: motion`) instead of Δ. Another reading with the same signature: `time_contrast.time_contrastive_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
