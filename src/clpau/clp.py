"""CLP: Contrastive Learning of Person-independent representations for facial AU detection.

Yong Li, Shiguang Shan, IEEE TIP 32 (2023) 3212-3225 (arXiv 2403.03400). Only the abstract is public; this module
implements the interpretation fixed in DESIGN.md §2 by composing its two halves: TCL, the margin-based temporal
contrast inside a clip (`tcl.py`, equations there), and CIR, cross-identity reconstruction (`cir.py`). Notation: a
clip X = (x_1 … x_T) of consecutive aligned face frames of one person, B clips per batch.

Networks
    f   backbone (ResNet) -> pooled feature h; h is the representation evaluated downstream
    g   AU projector (MLP): a = g(h) is the AU code, z = a / |a| the contrastive embedding
    f', g'  momentum (EMA) copies giving the keys k; a queue holds K past keys with the id of the clip they came from
    e, D    CIR's identity encoder and decoder (cir.py)

    L = L_TCL(z, k) + L_CIR(a)      (L_CIR every `cir_every`-th step; `tcl` and `cir` ablations switch one half off)

`tcl_fn` swaps the margin reading for another one with the same signature: `time_contrast.time_contrastive_loss`
(near frames positive, far frames negative, the frames between left out; `pretrain.tcl_variant: time_contrast`).

Options beyond DESIGN §2, all off by default (README: what each did to F1): `symmetric` — both views are queries,
each against the other's keys (MoCo v3); `online_keys` — keys from the online networks and the batch's other clips
as the negatives instead of the momentum encoder and the queue (SimCLR's framework under TCL's in-clip terms;
always symmetric); `same_person` — queue negatives only from the anchor's own person.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .cir import CIR
from .hardware import isolate_compile_cache
from .tcl import tcl_loss


def compiled_or_eager(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """`fn` compiled by torch.compile, falling back to `fn` itself (with a warning) when compiling fails — no C++
    compiler on the machine, an unsupported backend: a missing compiler must cost speed, never the run. An error of
    `fn` itself is raised again by the eager call."""
    isolate_compile_cache()  # kernels cached under another ISA ceiling aborted the process
    compiled: Callable | None = torch.compile(fn, dynamic=False)

    def call(x: torch.Tensor) -> torch.Tensor:
        nonlocal compiled
        if compiled is not None:
            try:
                return compiled(x)
            except Exception as err:  # noqa: BLE001 — any compiler failure; fn's own errors recur below
                warnings.warn(f"torch.compile failed, the key encoder runs uncompiled: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}", RuntimeWarning, stacklevel=2)
                compiled = None
        return fn(x)
    return call


class Projector(nn.Sequential):
    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


class CLP(nn.Module):
    """The whole method: the encoders, their momentum copies and the queue for TCL, and CIR's networks (`self.cir`);
    `forward` returns the loss terms.

    Defaults (our choice; the paper's are unknown): d=128, K=4096, m=0.99, τ=0.1, m_max=0.3, Δ_scale=4,
    δ_rank=0.05, w_rank=0.5, λ_self=1, λ_swap=0.5, λ_cyc=0.5, λ_id=0 (no gain measured), decoder at 32 px, CIR on 2
    frames per clip, every step.
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, *, dim: int = 128, queue_size: int = 4096,
                 momentum: float = 0.99, use_tcl: bool = True, use_cir: bool = True, id_dim: int = 64,
                 decoder_size: int = 32, tcl: dict | None = None, lambdas: tuple[float, ...] = (1, .5, .5, 0),
                 cir_frames: int = 2, cir_every: int = 1, same_person: bool = False, symmetric: bool = False,
                 online_keys: bool = False, compile_keys: bool = False,
                 gather: Callable[[torch.Tensor], torch.Tensor] | None = None, tcl_fn: Callable | None = None):
        super().__init__()
        self.encoder = backbone
        self.projector = Projector(feat_dim, 2 * dim, dim)
        self.key_encoder = copy.deepcopy(backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.momentum, self.use_tcl, self.use_cir = momentum, use_tcl, use_cir
        # CIR skips steps only between TCL steps: without TCL, a skipped step would train nothing
        self.cir_every = cir_every if use_tcl else 1
        self.symmetric, self.online_keys = symmetric, online_keys
        self.tcl_args = tcl or {}
        # the in-clip loss: the margin reading (tcl_loss) or another one with its signature (time_contrast.py)
        self.tcl_fn = tcl_fn or tcl_loss
        self.gather = gather or (lambda t: t)  # all_gather across ranks under DDP
        # the keys' forward never needs a backward, so a compiled graph can fuse batch norm, ReLU and pooling into
        # the convolutions' passes (kept as a plain function, not a submodule: the state dict's keys stay the same)
        self._keys = compiled_or_eager(self._key_forward) if compile_keys else self._key_forward
        if use_cir:
            self.cir = CIR(dim, id_dim=id_dim, decoder_size=decoder_size, frames=cir_frames, lambdas=lambdas)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ids", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_identity", torch.full((queue_size,), -1, dtype=torch.long))
        self.same_person = same_person
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_fill", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # forward calls, for `cir_every`
        # a host copy of `steps` (reading the buffer every step would wait for the device), read again after a
        # state dict is loaded (a resumed run)
        self._calls: int | None = None
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "_calls", None))

    def au_code(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def _key_forward(self, views: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_projector(self.key_encoder(views)), dim=1)

    @torch.no_grad()
    def _momentum_update(self) -> None:
        """θ' ← m·θ' + (1 − m)·θ, as one fused update over all tensors (a loop costs two kernels per tensor)."""
        online = [*self.encoder.parameters(), *self.projector.parameters()]
        target = [*self.key_encoder.parameters(), *self.key_projector.parameters()]
        torch._foreach_lerp_(target, online, 1 - self.momentum)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor, ids: torch.Tensor, identity: torch.Tensor) -> None:
        keys, ids, identity = self.gather(keys).to(self.queue.dtype), self.gather(ids), self.gather(identity)
        n, size = len(keys), len(self.queue)
        if n >= size:
            keys, ids, identity, n = keys[-size:], ids[-size:], identity[-size:], size
        # pointer arithmetic on the device: no read-back of the pointer per step
        idx = (torch.arange(n, device=keys.device) + self.queue_ptr) % size
        self.queue[idx] = keys
        self.queue_ids[idx] = ids
        self.queue_identity[idx] = identity
        self.queue_ptr.copy_((self.queue_ptr + n) % size)
        self.queue_fill.copy_(torch.clamp(self.queue_fill + n, max=size))

    def forward(self, view_q: torch.Tensor, view_k: torch.Tensor, clip_ids: torch.Tensor,
                other_identity: torch.Tensor | Callable[[], torch.Tensor] | None = None,
                identity: torch.Tensor | None = None, motion: torch.Tensor | None = None) -> dict:
        """view_q, view_k: (B, T, 3, H, W) two augmentations of the same clips; clip_ids (B,);
        other_identity: (B, 3, H, W) one frame of another person per clip (CIR), or a function that loads them,
        called only when this step runs CIR; identity (B,) the clips' person ids (needed with same_person);
        motion (B, T, T) landmark motion within each clip, for the motion-driven margin."""
        b, t = view_q.shape[:2]
        flat_q = view_q.flatten(0, 1)
        online = self.online_keys and self.use_tcl
        symmetric = (self.symmetric or online) and self.use_tcl
        if self.use_tcl and not online:
            # the keys before the queries: the queries' activations, which the backward reads next, are then the
            # latest in the cache (on this CPU 1 ms of a 75 ms step; the same numbers either way)
            with torch.no_grad():
                self._momentum_update()
                keys = self._keys(torch.cat([view_k.flatten(0, 1), flat_q]) if symmetric else view_k.flatten(0, 1))
        # symmetric: both views are queries (one backbone pass over both), each against the other's keys
        a_both = self.au_code(torch.cat([flat_q, view_k.flatten(0, 1)]) if symmetric else flat_q)
        a = a_both[: b * t]  # (B·T, d) AU codes of view_q
        out: dict = {}
        total = a.new_zeros(())
        if self.use_tcl:
            if identity is None:
                if self.same_person:
                    raise ValueError("negatives: same_person needs the clips' identity ids")
                identity = torch.full_like(clip_ids, -1)
            frame_ids, frame_identity = clip_ids.repeat_interleave(t), identity.repeat_interleave(t)
            if online:  # SimCLR-style: keys from the online networks, other clips' negatives from the batch
                keys = F.normalize(torch.cat([a_both[b * t:], a_both[: b * t]]), dim=1)
            else:
                # a copy (in the queries' precision, so it is also the cast): the loss's backward needs the keys as
                # they were before this step's enqueue
                queue = (self.queue.to(a.dtype, copy=True), self.queue_ids, self.queue_identity)  # empty: id −1
            pairs = [(a, keys[: b * t])]  # `a` itself, not a second slice: the same autograd graph as one-way
            if symmetric:
                pairs.append((a_both[b * t:], keys[b * t:]))
            parts = []
            for qa, k in pairs:
                negatives = (k, frame_ids, frame_identity) if online else queue
                person = {"identity": identity, "queue_identity": negatives[2]} if self.same_person else {}
                if motion is not None:
                    person["motion"] = motion
                parts.append(self.tcl_fn(F.normalize(qa, dim=1).view(b, t, -1), k.view(b, t, -1), clip_ids,
                                         negatives[0], negatives[1], **self.tcl_args, **person))
            terms = {name: sum(p[name] for p in parts) / len(parts) for name in ("loss", "nce", "rank")}
            if not online:
                self._enqueue(keys[: b * t], frame_ids, frame_identity)
            out.update(tcl=terms["loss"], nce=terms["nce"], rank=terms["rank"], logits=parts[0]["logits"],
                       labels=parts[0]["labels"])
            total = total + terms["loss"]
        if self._calls is None:
            self._calls = int(self.steps)
        cir_now = self.use_cir and self._calls % self.cir_every == 0
        self._calls += 1
        self.steps += 1
        # a step without CIR leaves its networks out of the graph: no gradient, so the optimizer leaves them alone
        # until the next CIR step (under DDP, pretrain.py lets parameters go without a gradient)
        if cir_now:
            if callable(other_identity):
                other_identity = other_identity()
            if other_identity is None:
                raise ValueError("CIR needs a frame of another identity per clip (other_identity)")
            terms, cir_total = self.cir(self.au_code, view_q, a, other_identity)
            out.update(terms)
            total = total + cir_total
        out["loss"] = total
        out["queue_fill"] = self.queue_fill.float() / len(self.queue)
        return out
