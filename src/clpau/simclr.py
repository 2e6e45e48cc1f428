"""SimCLR's NT-Xent loss (Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020): two views of each image; each view's positive is the other view, its negatives the
2N − 2 other views in the batch.

    L = −(1/2N) Σ_i log( exp(z_i·z_j(i) / τ) / Σ_{k≠i} exp(z_i·z_k / τ) )
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .clp import Projector


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.2) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    sim = z @ z.t() / tau
    sim.fill_diagonal_(float("-inf"))
    target = (torch.arange(2 * n, device=z.device) + n) % (2 * n)  # the other view; made on the device, no copy
    return F.cross_entropy(sim, target)


class SimCLR(torch.nn.Module):
    """The frame-level baseline: the backbone and a projector trained with NT-Xent on two views of each frame."""

    def __init__(self, backbone: torch.nn.Module, feat_dim: int, dim: int, tau: float):
        super().__init__()
        self.encoder, self.projector, self.tau = backbone, Projector(feat_dim, 2 * feat_dim, dim), tau

    def forward(self, view_q, view_k, clip_ids=None, other_identity=None, identity=None) -> dict:
        z1 = self.projector(self.encoder(view_q.flatten(0, 1)))
        z2 = self.projector(self.encoder(view_k.flatten(0, 1)))
        loss = nt_xent(z1, z2, self.tau)
        return {"loss": loss, "nce": loss}
