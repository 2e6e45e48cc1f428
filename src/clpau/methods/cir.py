"""CIR — cross-identity reconstruction, CLP's second half (Li & Shan, IEEE TIP 32 (2023); our reading, DESIGN.md
§2; docs/method.md): the AU code must carry a frame's facial action so that it can be put on another person's face.

Networks: e, the identity encoder, on another frame of the same clip -> u (what is constant in the clip: who,
lighting); D(a, u), the decoder, -> an image at reduced resolution (`decoder_size`). With the AU code a_t = g(f(x_t))
of frame t, u_A = e(x_s) from another frame s of the same clip and u_B = e(y) from a frame y of another identity B:

    L_self = |D(a_t, u_A) − x_t|_1              a_t must carry the frame's facial action
    ỹ = D(a_t, u_B)                             "B making A's facial action"
    L_swap = 1 − cos(g(f(ỹ)), sg(a_t))          the same action in another person -> the same AU code
    L_cyc  = |D(g(f(ỹ)), u_A) − x_t|_1          and back to A
    L_id   = 1 − cos(e*(ỹ), sg(u_B))            and ỹ must really be B (e* = e with its weights held fixed)
    L_CIR = λ_self L_self + λ_swap L_swap + λ_cyc L_cyc + λ_id L_id

(sg = stop-gradient; images compared at the decoder's resolution). Without L_id the decoder may ignore u and let
ỹ ≈ x_t, and then L_swap and L_cyc hold for any encoder (measured: swap 0.04 while self ≈ cycle ≈ 0.41); with it,
a(ỹ) = a_t asks the AU code of *another person* making the action to be the same.

Defaults (ours; the paper's are unknown): λ = (1, 0.5, 0.5, 0) (no gain measured from L_id), decoder at 32 px,
identity code of 64, CIR on 2 frames per clip (`frames`). On this CPU a step with CIR takes 1.45x a TCL step with
one frame per clip, 1.75x with two; `clp.CLP` runs it every `every`-th step. Params: `pretrain.cir`.

`CIROnly` (`pretrain.method: cir`) is the ablation: CIR alone on f and g, every step, no temporal contrast.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from clpau.core.params import _Section
from clpau.methods.base import Method
from clpau.methods.heads import Projector


class CIRParams(_Section):
    """`pretrain.cir`: cross-identity reconstruction (clp's second half, and the `cir` ablation)."""
    every: int = Field(16, ge=1, description="clp: CIR on every n-th step only (2 frames every 16th step: the frames "
                                             "of 1 every 8th, for less overhead; the `cir` ablation runs it every step)")
    frames: int = Field(2, ge=1, description="frames per clip that CIR reconstructs and swaps")
    lambda_self: float = Field(1.0, ge=0)
    lambda_swap: float = Field(0.5, ge=0)
    lambda_cycle: float = Field(0.5, ge=0)
    lambda_id: float = Field(0.0, ge=0, description="> 0: the swapped image must carry the other identity (no F1 "
                                                    "gain measured)")
    decoder_size: int = Field(32, ge=8, description="side of the decoder's images (a power of two)")
    id_dim: int = Field(64, ge=8, description="size of the identity code u")
    dim: int = Field(128, ge=8, description="size of the AU code when CIR trains alone (`cir`); clp's AU code is "
                                            "TCL's (tcl.dim)")

    @property
    def lambdas(self) -> tuple[float, float, float, float]:
        return self.lambda_self, self.lambda_swap, self.lambda_cycle, self.lambda_id


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


class CIR(nn.Module):
    """The identity encoder e and the decoder D, and one CIR step on some frames of each clip (module docstring)."""

    def __init__(self, au_dim: int, *, id_dim: int = 64, decoder_size: int = 32, frames: int = 2,
                 lambdas: tuple[float, ...] = (1, .5, .5, 0)):
        super().__init__()
        self.identity_encoder = IdentityEncoder(id_dim)
        self.decoder = Decoder(au_dim, id_dim, decoder_size)
        self.frames, self.lambdas = frames, lambdas

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

    def forward(self, encode_au: Callable, clips: torch.Tensor, a: torch.Tensor, other_identity: torch.Tensor
                ) -> tuple[dict, torch.Tensor]:
        """clips (B, T, 3, H, W) and their AU codes a (B·T, c); other_identity (B, 3, H, W), one frame of another
        person per clip; `encode_au` = g∘f. Returns the terms and L_CIR."""
        b, t = clips.shape[:2]
        # CIR on `frames` frames per clip: each frame already gives the full signal, and re-encoding every swapped
        # frame would cost another backbone pass over the whole batch.
        n = min(self.frames, t)
        pick = torch.linspace(0, t - 1, n, device=clips.device).round().long()  # from frame 0, evenly spaced
        x = clips[:, pick].flatten(0, 1)
        a_sel = a.view(b, t, -1)[:, pick].flatten(0, 1)
        # one identity code per clip (it is what the clip's frames share), from the frame half a clip after the
        # first picked one (frame 0), and one per other person: one identity-encoder pass over 2·B frames
        u_a, u_b = self.identity_encoder(torch.cat([clips[:, t // 2], other_identity])
                                         ).repeat_interleave(n, 0).view(2, b * n, -1)
        ls, lw, lc, li = self.lambdas
        terms = cir_losses(encode_au, self.decoder, x, a_sel, u_a, u_b, self.frozen_identity if li > 0 else None)
        return terms, ls * terms["self"] + lw * terms["swap"] + lc * terms["cycle"] + li * terms.get("id", 0.0)


class CIROnly(Method):
    """The ablation `cir`: f, g and CIR's networks trained by L_CIR alone, every step."""

    name = "cir"
    summary = "cross-identity reconstruction alone (the ablation)"
    sections = ("cir",)

    def __init__(self, backbone: nn.Module, cir: CIRParams | None = None):
        super().__init__()
        p = cir or CIRParams()
        self.encoder = backbone
        self.projector = Projector(backbone.out_dim, 2 * p.dim, p.dim)
        self.cir = CIR(p.dim, id_dim=p.id_dim, decoder_size=p.decoder_size, frames=p.frames, lambdas=p.lambdas)

    def au_code(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def step(self, batch: dict) -> dict:
        view_q = batch["view_q"]
        a = self.au_code(view_q.flatten(0, 1))
        terms, total = self.cir(self.au_code, view_q, a, batch["others"]())
        return {**terms, "loss": a.new_zeros(()) + total}
