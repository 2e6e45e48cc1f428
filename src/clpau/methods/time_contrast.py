"""Time-contrastive TCL: another honest reading of CLP's "frame-wise discriminative within a short clip" (docs/method.md,
"Readings of TCL"), selected with `pretrain.tcl_variant: time_contrast`.

The margin reading (`tcl.tcl_loss`) makes *every* other frame of the clip a negative, the next frame included — and on
the synthetic corpus 84 % of the in-clip pairs at the default span show the same evaluated facial action
(docs/results.md). Here time decides the pairs instead, as in time-contrastive networks (Sermanet et al., ICRA 2018):
frames close in time share their facial action, frames far apart need not:

    P(t) = {s : |t − s| ≤ Δ_pos}                  positives (the anchor's own key, s = t, always among them)
    N(t) = {s : |t − s| ≥ Δ_neg} ∪ queue           negatives: far frames of the clip and other clips' keys
    frames with Δ_pos < |t − s| < Δ_neg are left out: the margin, in time

    L = − 1/|P(t)| Σ_{p ∈ P(t)} log( exp(q_t·k_p / τ) / Σ_{s ∈ P(t) ∪ N(t)} exp(q_t·k_s / τ) )

averaged over anchors — the multi-positive InfoNCE of supervised contrastive learning (Khosla et al., NeurIPS 2020,
L_out), with the positives given by time instead of labels. Δ_pos = `pos_window`, Δ_neg = `neg_window`; a clip too
short to have a frame at Δ_neg keeps only the queue as negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def time_contrastive_loss(q: torch.Tensor, k: torch.Tensor, clip_ids: torch.Tensor, queue: torch.Tensor | None = None,
                          queue_ids: torch.Tensor | None = None, *, tau: float = 0.1, pos_window: int = 1,
                          neg_window: int = 3, identity: torch.Tensor | None = None,
                          queue_identity: torch.Tensor | None = None) -> dict:
    """q, k: (B, T, d) L2-normalised queries and keys of B clips of T frames; clip_ids (B,); queue (K, d) with its
    clip ids (−1 = empty slot), as `tcl.tcl_loss` takes them (also `identity`/`queue_identity` for same-person
    negatives). Returns loss (= nce), a zero `rank` (no ranking term here), and the logits of every anchor with its
    own key in column 0."""
    if not 0 <= pos_window < neg_window:
        raise ValueError(f"time_contrast needs 0 <= pos_window < neg_window, got {pos_window} and {neg_window}")
    b, t, _ = q.shape
    idx = torch.arange(t, device=q.device)
    delta = (idx[:, None] - idx[None, :]).abs()
    positive = delta <= pos_window  # (T, T)
    used = positive | (delta >= neg_window)
    # own key first, then the clip's frames in order (the own key's column repeated there is masked out)
    sim = torch.einsum("btd,bsd->bts", q, k) / tau  # (B, T, T)
    own = sim.diagonal(dim1=1, dim2=2).unsqueeze(-1)  # (B, T, 1)
    in_clip = sim.masked_fill(~used | torch.eye(t, dtype=torch.bool, device=q.device), float("-inf"))
    logits = [own, in_clip]
    pos_mask = [torch.ones(b, t, 1, dtype=torch.bool, device=q.device),
                (positive & ~torch.eye(t, dtype=torch.bool, device=q.device)).expand(b, t, t)]
    if queue is not None and len(queue):
        excluded = (queue_ids[None, :] == clip_ids[:, None]) | (queue_ids[None, :] < 0)
        if identity is not None:
            excluded |= queue_identity[None, :] != identity[:, None]
        qn = torch.einsum("btd,kd->btk", q / tau, queue.to(q.dtype)).masked_fill(excluded[:, None], float("-inf"))
        logits.append(qn)
        pos_mask.append(torch.zeros_like(qn, dtype=torch.bool))
    logits = torch.cat(logits, -1).reshape(b * t, -1)
    pos_mask = torch.cat(pos_mask, -1).reshape(b * t, -1)
    log_prob = F.log_softmax(logits.float(), dim=1)
    # mean log-probability of the positives (masked entries are −inf in logits but never positives)
    nce = -(log_prob.masked_fill(~pos_mask, 0).sum(1) / pos_mask.sum(1)).mean()
    labels = torch.zeros(b * t, dtype=torch.long, device=q.device)
    return {"loss": nce, "nce": nce, "rank": nce.new_zeros(()), "logits": logits, "labels": labels}
