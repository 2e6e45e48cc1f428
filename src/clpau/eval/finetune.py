"""The fine-tune protocol (`evaluate.finetune_steps` > 0): the pretrained backbone and a linear head trained on a
fold's training subjects, then per-AU F1 on its test subjects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clpau.core.benchmarks import LabelledSet
from clpau.eval.params import EvaluateParams
from clpau.eval.probe import encode
from clpau.eval.scores import f1_per_au


def finetune_fold(encoder_path: Path, data: LabelledSet, train: np.ndarray, test: np.ndarray, fold: int,
                  p: EvaluateParams, progress: bool = False) -> np.ndarray:
    """The fine-tune protocol for one fold: the pretrained backbone (for `supervised`, the one that never saw this
    fold) + a linear head, all trained on the training subjects' frames (AdamW, warm-up over a tenth of the steps
    then cosine lr, class-balanced BCE, the pretraining augmentations) by the training loop itself (train/loop.py:
    `evaluate.finetune_accelerator` and `finetune_precision` as pretraining resolves them, a GPU where there is one),
    then per-AU F1 on the test subjects. A fold's run is a few hundred steps inside `evaluate`: it is neither
    checkpointed nor logged to dvclive. Returns (A,) F1."""
    from lightning_fabric import Fabric

    from clpau.core.hardware import device_type, resolve_precision
    from clpau.data.datasets import LabelledFrames
    from clpau.methods.supervised import Supervised
    from clpau.train.encoder import encoder_folds, load_encoder
    from clpau.train.loop import fit
    from clpau.train.params import PretrainParams

    precision = resolve_precision(p.finetune_precision, device_type(p.finetune_accelerator))[0]
    fabric = Fabric(accelerator=p.finetune_accelerator, devices=1, precision=precision)
    fabric.seed_everything(fold, verbose=False)
    net, meta = load_encoder(encoder_path, fold=fold if encoder_folds(encoder_path) else None)
    y = data.labels[train]
    pos, neg = ((y == 1).sum(0), (y == 0).sum(0))
    model = Supervised(net.train(), len(data.aus), torch.tensor(np.clip(neg / np.maximum(pos, 1), 1, 50),
                                                                dtype=torch.float32))
    frames = LabelledFrames(data.subset(train), size=meta["image_size"], seed=fold)
    batch = min(p.finetune_batch, len(frames))
    loop = PretrainParams(method="supervised", backbone=meta["backbone"], image_size=meta["image_size"],
                          max_steps=p.finetune_steps, lr=p.finetune_lr, weight_decay=1e-4,
                          warmup_steps=max(1, p.finetune_steps // 10), seed=fold, live_dir=None,
                          compute={"precision": precision, "accelerator": p.finetune_accelerator})
    fit(fabric, model, frames, batch, loop, None, f"fine-tune fold {fold}", batch, None, progress, log=lambda *_: None)
    head = torch.nn.Sequential(model.encoder, model.head).cpu().float()
    logits = encode(head, data.subset(test).crops(), meta["image_size"], p.batch_size)
    return f1_per_au(data.labels[test], (1 / (1 + np.exp(-logits)) >= p.threshold).astype(np.int8))
