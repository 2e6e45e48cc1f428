"""The supervised upper bound: the backbone trained on the labelled training folds' AU labels (`pretrain.method:
supervised`, one encoder per fold, so that each fold's probe sees an encoder that never saw its subjects)."""

from __future__ import annotations

import torch

from clpau.methods.base import Method


class Supervised(Method):
    """The upper bound: the backbone trained on the labelled training folds with a multi-label linear head;
    unknown labels (-1) are masked out of the loss. Also the fine-tune protocol's model (eval/finetune.py)."""

    name = "supervised"
    summary = "AU labels of the training folds (the upper bound)"
    inputs = "labelled"

    def __init__(self, backbone: torch.nn.Module, n_aus: int, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.encoder, self.head = backbone, torch.nn.Linear(backbone.out_dim, n_aus)
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else torch.ones(n_aus))

    @classmethod
    def build(cls, backbone: torch.nn.Module, *, n_aus: int, pos_weight: torch.Tensor | None = None) -> Supervised:
        return cls(backbone, n_aus, pos_weight)

    def step(self, batch: dict) -> dict:
        image, labels = batch["image"], batch["labels"]
        logits = self.head(self.encoder(image)).float()
        known = labels >= 0
        weight = self.pos_weight.expand_as(labels)[known]
        target = labels[known]
        # pos_weight > 1 on rare AUs: class balancing, as the linear probe does (F1 of the positive class)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], target,
                                                                    weight=torch.where(target > 0, weight, 1.0))
        return {"loss": loss, "logits": logits}
