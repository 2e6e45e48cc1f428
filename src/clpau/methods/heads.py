"""Blocks the methods share: the projection head, a queue of past keys, the momentum (EMA) update, a compiled
key forward, and the all-gather that keeps its gradient.

- Projector: the MLP head g of SimCLR (Chen et al., ICML 2020) and MoCo v2 (Chen et al., arXiv 2003.04297), with a
  batch norm after the hidden layer; a = g(h) is the AU code of CLP.
- KeyQueue: MoCo's dictionary (He et al., CVPR 2020, Alg. 1): the K latest keys, first in first out, each with the
  id of the clip (or frame) and of the person it came from, so that a method can leave out keys of the anchor's own
  clip or keep only its own person's (an id −1 marks a slot never written: never a negative).
- momentum_update: θ' ← m·θ' + (1 − m)·θ (MoCo, Eq. 2).
- gather_with_grad: every process's tensor, concatenated, with the gradient flowing back to each process's own part
  (as SimCLR's multi-device negatives need).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from clpau.core.hardware import isolate_compile_cache


class Projector(nn.Sequential):
    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


@torch.no_grad()
def momentum_update(online: list[nn.Module], target: list[nn.Module], momentum: float) -> None:
    """θ' ← m·θ' + (1 − m)·θ over the modules' parameters, as one fused update (a loop costs two kernels a tensor)."""
    torch._foreach_lerp_([q for t in target for q in t.parameters()], [q for o in online for q in o.parameters()],
                         1 - momentum)


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """(world·N, …): `t` (N, …) of every process in rank order; `t` itself with one process. The gradient of each
    part flows back to the process it came from, so negatives from other processes train this one's encoder too."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    if not t.is_floating_point():  # ids: nothing to differentiate
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)
    return torch.cat(_GatherWithGrad.apply(t.contiguous()))


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each process the sum, over the processes, of the gradients of its part
    (SimCLR's multi-device negatives): DDP's average of the parameters' gradients is then the gradient of the mean
    of the processes' losses, as one process with the whole batch would compute it."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        import torch.distributed as dist

        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t)
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        summed = torch.stack(grads)
        dist.all_reduce(summed)
        return summed[dist.get_rank()]


class KeyQueue(nn.Module):
    """The K latest keys (buffers, so they are checkpointed with the model), their clip and person ids."""

    def __init__(self, size: int, dim: int, init: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("keys", init if init is not None else torch.zeros(size, dim))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("identity", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("fill", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return len(self.keys)

    def snapshot(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The keys as they are before this step's push (a copy, in the queries' dtype) and their ids."""
        return self.keys.to(dtype, copy=True), self.ids, self.identity

    @torch.no_grad()
    def push(self, keys: torch.Tensor, ids: torch.Tensor, identity: torch.Tensor,
             gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Enqueue every process's keys (`gather`: the all-gather under DDP), dropping the oldest."""
        if gather is not None:
            keys, ids, identity = gather(keys), gather(ids), gather(identity)
        keys = keys.to(self.keys.dtype)
        n, size = len(keys), len(self.keys)
        if n >= size:
            keys, ids, identity, n = keys[-size:], ids[-size:], identity[-size:], size
        # pointer arithmetic on the device: no read-back of the pointer per step
        idx = (torch.arange(n, device=keys.device) + self.ptr) % size
        self.keys[idx] = keys
        self.ids[idx] = ids
        self.identity[idx] = identity
        self.ptr.copy_((self.ptr + n) % size)
        self.fill.copy_(torch.clamp(self.fill + n, max=size))

    def share_filled(self) -> torch.Tensor:
        return self.fill.float() / len(self.keys)


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


def normalise(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1)
