"""The floor: an untrained encoder (`pretrain.method: random`), the backbone as its initialisation draws it from
`pretrain.seed`. `clpau floor` probes the same encoder beside every evaluation (eval/floor.py)."""

from __future__ import annotations

from torch import nn

from clpau.methods.base import Method


class Random(Method):
    name = "random"
    summary = "the untrained encoder (the floor)"
    inputs = "none"

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.encoder = backbone

    def step(self, batch: dict) -> dict:
        raise RuntimeError("the random-init encoder is not trained")
