"""SimCLR's NT-Xent loss (Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020): two views of each image; each view's positive is the other view, its negatives the
2N − 2 other views in the batch.

    L = −(1/2N) Σ_i log( exp(z_i·z_j(i) / τ) / Σ_{k≠i} exp(z_i·z_k / τ) )

The method `SimCLR` (`pretrain.method: simclr`, params `pretrain.simclr`): the frame-level baseline, the backbone and
a projector (hidden 2·feature width) trained with NT-Xent on two views of each frame. Defaults: d = 128, τ = 0.2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from clpau.core.params import _Section
from clpau.methods.base import Method
from clpau.methods.heads import Projector


class SimCLRParams(_Section):
    """`pretrain.simclr`: the SimCLR baseline."""
    dim: int = Field(128, ge=8)
    tau: float = Field(0.2, gt=0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.2) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    sim = z @ z.t() / tau
    sim.fill_diagonal_(float("-inf"))
    target = (torch.arange(2 * n, device=z.device) + n) % (2 * n)  # the other view; made on the device, no copy
    return F.cross_entropy(sim, target)


class SimCLR(Method):
    """The backbone and a projector trained with NT-Xent on two views of each frame."""

    name = "simclr"
    summary = "SimCLR's NT-Xent on frames (baseline)"
    inputs = "frames"
    sections = ("simclr",)

    def __init__(self, backbone: torch.nn.Module, simclr: SimCLRParams | None = None):
        super().__init__()
        p = simclr or SimCLRParams()
        self.encoder, self.tau = backbone, p.tau
        self.projector = Projector(backbone.out_dim, 2 * backbone.out_dim, p.dim)

    def step(self, batch: dict) -> dict:
        z1 = self.projector(self.encoder(batch["view_q"].flatten(0, 1)))
        z2 = self.projector(self.encoder(batch["view_k"].flatten(0, 1)))
        loss = nt_xent(z1, z2, self.tau)
        return {"loss": loss, "nce": loss}
