"""CIR — cross-identity reconstruction, CLP's second half (Li & Shan, IEEE TIP 32 (2023); our reading, docs/method.md):
the AU code must carry a frame's facial action so that it can be put on another person's face.

A facial action is skin moving, so CIR does not paint pixels from a code: it decodes *where pixels move* and warps
a real frame (FAb-Net, Wiles et al., BMVC 2018; TCAE, Li et al., CVPR 2019; FaceCycle, Chang et al., CVPR 2021).
Identity stays in the pixels by construction — the warped image is the source's own skin and background — and the
encoder must put the action into the AU code a = g(f(x)), because a is all the AU decoder has to say where
things move.

Networks: W_au(a_src, a_tgt) -> an AU displacement field on a `grid` x `grid` lattice; P, a small pose encoder, ->
a pose code p, and W_pose(p_src, p_tgt) -> a pose displacement on a `pose_grid` lattice (TCAE's split of head pose
from facial action: a coarse lattice can move the whole face but not a lip corner). Both are bilinearly upsampled
to the encoder's input size S and added; warp(x, φ)(p) = x(p + φ(p)) by `grid_sample`, zero flow the exact identity.
For a clip of person A, frames s and t of it (half a clip apart, so the action differs) and a frame y of another
person B:

    φ_st = W_au(a_s, a_t) + W_pose(p_s, p_t)
    L_self = |warp(x_s, φ_st) − x_t|_1                 a must carry what moved between s and t
    ỹ = warp(y, W_au(a(y), a_t))                        "B making the facial action of A's frame t", in B's pose
    L_swap = 1 − cos(a(ỹ), sg(a_t))                     (`swap_loss: cosine`) the same action -> the same code, or
    L_swap = −log softmax_t'(z(ỹ)·z_t' / τ)[t]          (`contrast`) ỹ a positive of A's frame t against the clip's
                                                         other frames t' (z = a / |a|)
    L_cyc = |warp(sg(ỹ), W_au(a(ỹ), a(y))) − y|_1       and back to B (ỹ's pixels held: else no motion is cheapest)

With `swap_flow: motion` the swap moves B by A's own motion from s to t, decoded from two codes of one person, so
no identity difference can enter the flow, and the code's *change* must be the same whoever moves:

    ỹ = warp(y, W_au(a_s, a_t))                         "B making the motion A made from frame s to frame t"
    L_swap = 1 − cos(a(ỹ) − a(y), sg(a_t − a_s))        (`cosine`), or the change as a positive of A's change
                                                         s -> t against s -> t' (`contrast`; same τ)
    L_cyc = |warp(sg(ỹ), W_au(a_t, a_s)) − y|_1         A's motion undone
    L_flow = mean |W_au(·)|                             the AU motion is sparse (TCAE's L1): global motion goes to
                                                         the pose branch, which the swap leaves out

With `swap_trains: encoder`, ỹ is held fixed in L_swap (sg(ỹ)): W_au learns motion from L_self alone, and L_swap
asks the encoder to code the transplanted motion as A's action. With `both`, L_swap also trains W_au, which can
then find warps that move the code rather than the face (measured: docs/results.md).
    L_CIR = λ_self L_self + λ_swap L_swap + λ_cyc L_cyc + λ_flow L_flow

(sg = stop-gradient; images compared at the encoder's input size, normalised as it sees them; flows in
`grid_sample`'s units, 2 = the image side). The last layers of W_au and W_pose start at zero: the first warps are
the identity, and what moves is learned.

Defaults (ours; the paper's are unknown): λ = (1, 0.5, 0, 0.01) — L_cyc off: at 0.5 (with ỹ free or held) the mean
AU flow fell to 2e-6–3e-6 within 150 steps, against 3e-3 without it: one decoder serves both ways, and moving
nothing makes the way back exact — grid 16, pose grid 4, pose code 8, flow at most
0.25 of the side, CIR on 2 target frames a clip on every 2nd step. Params: `pretrain.cir`. The pixel decoder
D(a, u) this replaced could not put one person's action on another's face (docs/results.md, "Swap fidelity").

`CIROnly` (`pretrain.method: cir`) is the ablation: CIR alone on f and g, every step, no temporal contrast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from clpau.core.params import _Section
from clpau.methods.base import Method
from clpau.methods.heads import Projector


class CIRParams(_Section):
    """`pretrain.cir`: cross-identity reconstruction with a warp decoder (clp's second half, and the `cir` ablation)."""
    every: int = Field(2, ge=1, description="clp: CIR on every n-th step only (the `cir` ablation runs it every step)")
    frames: int = Field(2, ge=1, description="target frames per clip that CIR reconstructs and swaps")
    lambda_self: float = Field(1.0, ge=0)
    lambda_swap: float = Field(0.5, ge=0)
    lambda_cycle: float = Field(0.0, ge=0, description="the way back; off: at 0.5 the AU flow fell to zero (a decoder "
                                                       "shared by both ways is cheapest when nothing moves)")
    lambda_flow: float = Field(0.01, ge=0, description="L1 on the AU displacement (sparse facial motion)")
    swap_loss: Literal["cosine", "contrast"] = Field(
        "cosine", description="how the swap's AU code is tied to A's frame: a cosine pull to it, or a contrastive "
                              "positive of it against the clip's other frames")
    tau: float = Field(0.1, gt=0, description="swap_loss contrast: temperature")
    swap_trains: Literal["both", "encoder"] = Field(
        "both", description="what the swap's term trains: the encoder and the warp decoder, or the encoder alone "
                            "(ỹ held fixed: the decoder learns motion from the self term only, and the swap cannot "
                            "become a distortion that merely moves the code)")
    swap_flow: Literal["cross", "motion"] = Field(
        "cross", description="the swap's flow: from B's code to A's frame's (cross), or A's own motion between two "
                             "of its frames put on B, the code's change tied to A's (motion: no identity difference "
                             "can enter the flow)")
    grid: int = Field(16, ge=2, description="side of the lattice the AU displacement is predicted on")
    pose_grid: int = Field(4, ge=1, description="side of the pose displacement's lattice (coarse: it moves the "
                                                     "whole face, not a lip corner)")
    pose_dim: int = Field(8, ge=1, description="size of the pose code")
    max_flow: float = Field(0.25, gt=0, le=2, description="largest displacement, in grid_sample units (2 = the side)")
    dim: int = Field(128, ge=8, description="size of the AU code when CIR trains alone (`cir`); clp's AU code is "
                                            "TCL's (tcl.dim)")

    @property
    def lambdas(self) -> tuple[float, float, float, float]:
        return self.lambda_self, self.lambda_swap, self.lambda_cycle, self.lambda_flow


def identity_grid(n: int, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n, h, w, 2): the sampling grid of `grid_sample(align_corners=False)` that returns the image itself — the
    centre of pixel j at (2j + 1) / side − 1 (exact in binary for power-of-two sides)."""
    ys = (2 * torch.arange(h, device=device, dtype=dtype) + 1) / h - 1
    xs = (2 * torch.arange(w, device=device, dtype=dtype) + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).expand(n, h, w, 2)


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """warp(x, φ)(p) = x(p + φ(p)): img (N, C, H, W), flow (N, 2, h, w) in grid_sample units (x then y; 2 = the
    side), upsampled bilinearly to (H, W) when coarser. Borders repeat the edge pixel."""
    n, _, h, w = img.shape
    if flow.shape[-2:] != (h, w):
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
    grid = identity_grid(n, h, w, img.device, img.dtype) + flow.permute(0, 2, 3, 1).to(img.dtype)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FlowDecoder(nn.Module):
    """W(c_src, c_tgt) -> (N, 2, grid, grid) displacement, |φ| < max_flow (tanh); the last layer starts at zero,
    so an untrained decoder warps nothing."""

    def __init__(self, code_dim: int, grid: int, max_flow: float, width: int = 64):
        super().__init__()
        self.max_flow = max_flow
        start = min(grid, 4)
        self.start = start
        # the codes standardised first: W must not depend on the scale a contrastive loss leaves the AU code at
        self.fc = nn.Sequential(nn.LayerNorm(2 * code_dim), nn.Linear(2 * code_dim, width * start * start),
                                nn.ReLU(inplace=True))
        ups, ch, side = [], width, start
        while side < grid:
            ups += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.Conv2d(ch, max(ch // 2, 16), 3, 1, 1), nn.ReLU(inplace=True)]
            ch, side = max(ch // 2, 16), side * 2
        self.out = nn.Conv2d(ch, 2, 3, 1, 1)
        self.up = nn.Sequential(*ups)
        for m in [*self.fc, *self.up]:  # He init: activations keep their scale through the ReLUs
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.width, self.grid = width, grid

    def forward(self, c_src: torch.Tensor, c_tgt: torch.Tensor) -> torch.Tensor:
        x = self.fc(torch.cat([c_src, c_tgt], 1)).view(-1, self.width, self.start, self.start)
        flow = self.max_flow * torch.tanh(self.out(self.up(x)))
        if flow.shape[-1] != self.grid:  # a grid that is not start · 2^k
            flow = F.interpolate(flow, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        return flow


class PoseEncoder(nn.Sequential):
    """P: a small CNN on a half-resolution image -> the pose code; head pose needs no fine detail."""

    def __init__(self, dim: int = 8):
        def block(i, o):
            return [nn.Conv2d(i, o, 3, 2, 1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
        super().__init__(nn.AvgPool2d(2), *block(3, 16), *block(16, 32), *block(32, 64), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(64, dim))


def swap_contrast(z_swap: torch.Tensor, z_clip: torch.Tensor, target: torch.Tensor, tau: float) -> torch.Tensor:
    """−log softmax over the clip's frames of the swap's similarity, at A's frame t: z_swap (N, d) with the clip
    (N, T, d) it came from, target (N,) the frame index t; all L2-normalised."""
    logits = torch.einsum("nd,ntd->nt", z_swap, z_clip) / tau
    return F.cross_entropy(logits, target)


class CIR(nn.Module):
    """The warp decoders and the pose encoder, and one CIR step on some frames of each clip (module docstring)."""

    def __init__(self, au_dim: int, p: CIRParams | None = None):
        super().__init__()
        p = p or CIRParams()
        self.au_flow = FlowDecoder(au_dim, p.grid, p.max_flow)
        self.pose_encoder = PoseEncoder(p.pose_dim)
        self.pose_flow = FlowDecoder(p.pose_dim, p.pose_grid, p.max_flow, width=32)
        self.frames, self.lambdas, self.swap_loss, self.tau = p.frames, p.lambdas, p.swap_loss, p.tau
        self.swap_trains_decoder = p.swap_trains == "both"
        self.motion = p.swap_flow == "motion"

    def reconstruct(self, x_s: torch.Tensor, x_t: torch.Tensor, a_s: torch.Tensor, a_t: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """warp(x_s, φ_st) (the self term's image, ≈ x_t) and the AU part of φ_st."""
        p = self.pose_encoder(torch.cat([x_s, x_t]))
        au = self.au_flow(a_s, a_t)
        pose = self.pose_flow(*p.chunk(2))
        pose = F.interpolate(pose, size=au.shape[-2:], mode="bilinear", align_corners=False)
        return warp(x_s, au + pose), au

    def swap(self, y: torch.Tensor, a_y: torch.Tensor, a_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ỹ = warp(y, W_au(a(y), a_t)): y's person with the action of the frame coded a_t, in y's own pose; and
        its flow."""
        flow = self.au_flow(a_y, a_t)
        return warp(y, flow), flow

    def forward(self, encode_au: Callable, clips: torch.Tensor, a: torch.Tensor, other_identity: torch.Tensor
                ) -> tuple[dict, torch.Tensor]:
        """clips (B, T, 3, S, S) and their AU codes a (B·T, c); other_identity (B, 3, S, S), one frame of another
        person per clip; `encode_au` = g∘f. Returns the terms and L_CIR."""
        b, t = clips.shape[:2]
        # `frames` target frames per clip, evenly spaced from frame 0, each warped from the frame half a clip away:
        # each pair gives the full signal, and re-encoding every swapped frame would cost a backbone pass per frame
        n = min(self.frames, t)
        tgt = torch.linspace(0, t - 1, n, device=clips.device).round().long()
        src = (tgt + t // 2) % t
        codes = a.view(b, t, -1)
        x_s, x_t = clips[:, src].flatten(0, 1), clips[:, tgt].flatten(0, 1)
        a_s, a_t = codes[:, src].flatten(0, 1), codes[:, tgt].flatten(0, 1)
        recon, flow_self = self.reconstruct(x_s, x_t, a_s, a_t)
        self_rec = (recon - x_t).abs().mean()

        a_y = encode_au(other_identity)  # (B, c): one backbone pass over B frames
        y, a_y_rep = other_identity.repeat_interleave(n, 0), a_y.repeat_interleave(n, 0)
        swapped, flow_swap = self.swap(y, a_s if self.motion else a_y_rep, a_t)
        if not self.swap_trains_decoder:
            swapped = swapped.detach()
        a_swapped = encode_au(swapped)  # and one over the B·n swaps
        # what the swap's code is tied to: A's frame t (cross), or its change tied to A's change s -> t (motion)
        got = a_swapped - a_y_rep if self.motion else a_swapped
        # (B, n, T, c): for each swap, its clip's codes a_t' (cross) or changes a_t' − a_s (motion)
        clip_codes = codes[:, None] - codes[:, src, None] if self.motion else codes[:, None].expand(b, n, t, -1)
        if self.swap_loss == "cosine":
            want = clip_codes[:, torch.arange(n, device=codes.device), tgt].flatten(0, 1).detach()
            swap = (1 - F.cosine_similarity(got, want, dim=1)).mean()
        else:  # the swap's clip: A's frames t' (or A's changes s -> t'); a zero change has similarity 0
            swap = swap_contrast(F.normalize(got, dim=1), F.normalize(clip_codes.flatten(0, 1), dim=-1),
                                 tgt.repeat(b), self.tau)
        # ỹ's pixels held fixed in the way back: with them free, the cheapest cycle is no forward motion at all
        # (measured: the AU flow fell to 2e-6 within 150 steps); what must carry the way back is a(ỹ)
        back = warp(swapped.detach(), self.au_flow(a_t, a_s)) if self.motion else \
            self.swap(swapped.detach(), a_swapped, a_y_rep)[0]
        cycle = (back - y).abs().mean()
        flow = (flow_self.abs().mean() + flow_swap.abs().mean()) / 2
        terms = {"self": self_rec, "swap": swap, "cycle": cycle, "flow": flow}
        ls, lw, lc, lf = self.lambdas
        return terms, ls * self_rec + lw * swap + lc * cycle + lf * flow


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
        self.cir = CIR(p.dim, p)

    def au_code(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def step(self, batch: dict) -> dict:
        view_q = batch["view_q"]
        a = self.au_code(view_q.flatten(0, 1))
        terms, total = self.cir(self.au_code, view_q, a, batch["others"]())
        return {**terms, "loss": a.new_zeros(()) + total}
