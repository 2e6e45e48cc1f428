"""CLP: Contrastive Learning of Person-independent representations for facial AU detection.

Yong Li, Shiguang Shan, IEEE TIP 32 (2023) 3212-3225 (arXiv 2403.03400). Only the abstract is public; this module
implements our interpretation (docs/method.md) by composing its two halves: TCL, the margin-based temporal contrast
inside a clip (`tcl.py`, equations there), and CIR, cross-identity reconstruction (`cir.py`). Notation: a clip
X = (x_1 … x_T) of consecutive aligned face frames of one person, B clips per batch.

Networks
    f   backbone (ResNet) -> pooled feature h; h is the representation evaluated downstream
    g   AU projector (MLP): a = g(h) is the AU code, z = a / |a| the contrastive embedding
    the keys: the online networks (default) or momentum copies f', g' with a queue (tcl.py)
    W_au, P, W_pose   CIR's AU warp decoder, pose encoder and pose warp decoder (cir.py)

    L = L_TCL(z, k) + L_CIR(a)      (L_CIR on every `cir.every`-th step; params pretrain.tcl and pretrain.cir)

Defaults (our choice; the paper's are unknown): those of TCL and CIR (tcl.py, cir.py); CIR on every 2nd step on 2
target frames a clip.
"""

from __future__ import annotations

import torch
from torch import nn

from clpau.methods.cir import CIR, CIRParams
from clpau.methods.tcl import TCL, TCLParams


class CLP(TCL):
    """TCL with CIR's networks (`self.cir`) trained on every `cir.every`-th step; `step` returns the loss terms."""

    name = "clp"
    summary = "TCL + cross-identity reconstruction: the whole method"
    sections = ("tcl", "cir")

    def __init__(self, backbone: nn.Module, tcl: TCLParams | None = None, cir: CIRParams | None = None):
        tcl, cir = tcl or TCLParams(), cir or CIRParams()
        super().__init__(backbone, tcl)
        self.cir = CIR(tcl.dim, cir)
        self.cir_every = cir.every
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # steps taken, for `cir_every`
        # a host copy of `steps` (reading the buffer every step would wait for the device), read again after a
        # state dict is loaded (a resumed run)
        self._calls: int | None = None
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "_calls", None))

    def step(self, batch: dict) -> dict:
        view_q = batch["view_q"]
        out, a = self.contrast(view_q, batch["view_k"], batch["clip_id"], batch.get("identity"), batch.get("motion"))
        out["tcl"] = out["loss"]
        if self._calls is None:
            self._calls = int(self.steps)
        cir_now = self._calls % self.cir_every == 0
        self._calls += 1
        self.steps += 1
        # a step without CIR leaves its networks out of the graph: no gradient, so the optimizer leaves them alone
        # until the next CIR step (under DDP, the loop lets parameters go without a gradient)
        if cir_now:
            terms, cir_total = self.cir(self.au_code, view_q, a, batch["others"]())
            out.update(terms)
            out["loss"] = out["loss"] + cir_total
        return out
