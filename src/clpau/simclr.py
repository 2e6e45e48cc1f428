"""SimCLR's NT-Xent loss (Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020): two views of each image; each view's positive is the other view, its negatives the
2N − 2 other views in the batch.

    L = −(1/2N) Σ_i log( exp(z_i·z_j(i) / τ) / Σ_{k≠i} exp(z_i·z_k / τ) )
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.2) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    sim = z @ z.t() / tau
    sim.fill_diagonal_(float("-inf"))
    target = (torch.arange(2 * n, device=z.device) + n) % (2 * n)  # the other view; made on the device, no copy
    return F.cross_entropy(sim, target)
