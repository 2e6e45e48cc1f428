"""The interface every pretraining method implements (solo-learn's `BaseMethod`, reduced to what the loop needs).

A method is an `nn.Module` that holds `encoder` — the backbone whose pooled feature is evaluated downstream and
written to encoder.pt — and whatever else it trains (projectors, momentum copies, queues, decoders). The loop
(train/loop.py) calls it on each batch, on the trainer's device, and backpropagates `out["loss"]`:

    out = method(batch)          # = method.step(batch), through Fabric's forward (precision, DDP)

`batch` holds, by `inputs`:
- "clips": view_q, view_k (B, T, 3, S, S) two augmentations of B clips of T consecutive frames; clip_id (B,);
  identity (B,) the clips' person ids; motion (B, T, T) when `uses_motion`; others() -> (B, 3, S, S), one frame
  of another person per clip, loaded only when called (CIR);
- "frames": the same with T = 1 (single frames; a step takes batch_clips·clip_len of them);
- "labelled": image (N, 3, S, S) and labels (N, A) of the labelled benchmark (−1: unknown);
- "none": nothing; the method is not trained (`random`).

`step` returns a dict of scalar tensors: "loss" and any of the terms the loop logs (train/loop.py LOGGED_TERMS).
Each method reads its own params sections (`sections`: pretrain.<name> in params.yaml), given to `build`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import nn


class Method(nn.Module):
    name: ClassVar[str]
    summary: ClassVar[str]  # one line, for `clpau pretrain --help`
    inputs: ClassVar[Literal["clips", "frames", "labelled", "none"]] = "clips"
    sections: ClassVar[tuple[str, ...]] = ()
    uses_motion: bool = False  # batches carry the clips' landmark motion (TCL's margin_by: motion)
    encoder: nn.Module

    @classmethod
    def build(cls, backbone: nn.Module, **sections) -> Method:
        """The method on `backbone`, from its params sections (by name)."""
        return cls(backbone, **sections)

    def step(self, batch: dict) -> dict:
        raise NotImplementedError

    def forward(self, batch: dict) -> dict:
        return self.step(batch)
