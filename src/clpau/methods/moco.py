"""MoCo v2 (He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020; Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning", arXiv 2003.04297): the
frame-level baseline, on its own momentum encoder and queue. Read beside facebookresearch/moco's `moco/builder.py`:

    q = normalize(g(f(x_q)))                       (N, d)  queries
    θ_k ← m·θ_k + (1 − m)·θ_q                     momentum update, before the keys
    k = normalize(g'(f'(x_k)))                     (N, d)  keys, no gradient
    l_pos = q·k (N, 1),  l_neg = q·queue (N, K)
    logits = [l_pos, l_neg] / τ,  labels = 0       L = CE(logits, labels)
    enqueue k, dequeue the oldest

Where ours departs from builder.py, and why:
- the head is the shared `Projector` (Linear-BN-ReLU-Linear, hidden 2·d) rather than v2's Linear-ReLU-Linear,
  so that every method here trains the same head on the same backbone;
- queue slots never written yet (id −1) and keys of the query's own frame (the same dataset item, from an earlier
  epoch) are masked out of l_neg, as in TCL's queue;
- no shuffled batch norm: on one GPU or CPU it is the identity; under DDP on GPUs the loop converts batch norm to
  synchronised batch norm (train/loop.py), which removes the same leak;
- the queue is filled with every process's keys (the loop's all-gather), as `concat_all_gather` does.

Defaults (ours, as in the 1500-step comparison): d = 128, K = 2048, m = 0.99, τ = 0.1 (MoCo v2: K = 65536,
m = 0.999, τ = 0.2 for ImageNet's 1.28 M images; our corpus has 12 k frames).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from clpau.core.params import _Section
from clpau.methods.base import Method
from clpau.methods.heads import KeyQueue, Projector, compiled_or_eager, momentum_update


class MoCoParams(_Section):
    """`pretrain.moco`: the MoCo v2 baseline."""
    dim: int = Field(128, ge=8)
    queue_size: int = Field(2048, ge=1, description="K, the keys of the last 16 steps at 128 frames a step")
    momentum: float = Field(0.99, gt=0, lt=1)
    tau: float = Field(0.1, gt=0)
    compile_keys: bool = Field(False, description="torch.compile the key encoder's gradient-free forward")


class MoCo(Method):
    name = "moco"
    summary = "MoCo v2 on frames (baseline)"
    inputs = "frames"
    sections = ("moco",)

    def __init__(self, backbone: nn.Module, moco: MoCoParams | None = None):
        super().__init__()
        p = moco or MoCoParams()
        self.tau, self.momentum = p.tau, p.momentum
        self.encoder = backbone
        self.projector = Projector(backbone.out_dim, 2 * p.dim, p.dim)
        self.key_encoder = copy.deepcopy(backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.queue = KeyQueue(p.queue_size, p.dim, F.normalize(torch.randn(p.queue_size, p.dim), dim=1))
        self.gather = None  # the loop's all-gather across processes
        self._keys = compiled_or_eager(self._key_forward) if p.compile_keys else self._key_forward

    def _key_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_projector(self.key_encoder(x)), dim=1)

    def contrast(self, im_q: torch.Tensor, im_k: torch.Tensor, ids: torch.Tensor) -> dict:
        """im_q, im_k (N, 3, H, W) two views of N frames with their dataset ids (N,)."""
        q = F.normalize(self.projector(self.encoder(im_q)), dim=1)
        with torch.no_grad():
            momentum_update([self.encoder, self.projector], [self.key_encoder, self.key_projector], self.momentum)
            k = self._keys(im_k)
        queue, queue_ids, _ = self.queue.snapshot(q.dtype)
        l_pos = torch.einsum("nc,nc->n", q, k.to(q.dtype)).unsqueeze(-1)
        l_neg = torch.einsum("nc,kc->nk", q, queue)
        l_neg = l_neg.masked_fill((queue_ids[None, :] == ids[:, None]) | (queue_ids[None, :] < 0), float("-inf"))
        logits = torch.cat([l_pos, l_neg], dim=1) / self.tau
        labels = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        self.queue.push(k, ids, torch.full_like(ids, -1), self.gather)
        return {"logits": logits, "labels": labels}

    def step(self, batch: dict) -> dict:
        out = self.contrast(batch["view_q"].flatten(0, 1), batch["view_k"].flatten(0, 1), batch["clip_id"])
        loss = F.cross_entropy(out["logits"], out["labels"])
        return {**out, "loss": loss, "nce": loss, "queue_fill": self.queue.share_filled()}
