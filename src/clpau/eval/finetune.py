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
    fold) + a linear head, all trained on the training subjects' frames (AdamW, cosine lr, class-balanced BCE, the
    pretraining augmentations), then per-AU F1 on the test subjects. Returns (A,) F1."""
    from tqdm import tqdm

    from clpau.core.hardware import autocast_dtype, resolve_precision
    from clpau.data.datasets import LabelledFrames
    from clpau.methods.supervised import Supervised
    from clpau.train.encoder import encoder_folds, load_encoder
    from clpau.train.loop import adamw
    from clpau.train.sampling import epoch_loader

    torch.manual_seed(fold)
    net, meta = load_encoder(encoder_path, fold=fold if encoder_folds(encoder_path) else None)
    y = data.labels[train]
    pos, neg = ((y == 1).sum(0), (y == 0).sum(0))
    model = Supervised(net.train(), len(data.aus), torch.tensor(np.clip(neg / np.maximum(pos, 1), 1, 50),
                                                                dtype=torch.float32))
    frames = LabelledFrames(data.subset(train), size=meta["image_size"], seed=fold)
    opt = adamw(model.parameters(), p.finetune_lr, 1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, p.finetune_lr, total_steps=p.finetune_steps, pct_start=0.1)
    model = model.to(memory_format=torch.channels_last)
    # bf16 where this CPU runs it natively, fp32 elsewhere (emulated bf16 is ~3x slower than fp32): hardware.py
    dtype = autocast_dtype(resolve_precision("auto", "cpu")[0])
    bar = tqdm(total=p.finetune_steps, desc=f"fine-tune fold {fold}", unit="step", disable=not progress)
    step = 0
    epoch = 0
    while step < p.finetune_steps:
        frames.set_epoch(epoch)  # new crops and colours every pass
        loader = epoch_loader(frames, min(p.finetune_batch, len(frames)), num_workers=0, seed=fold, epoch=epoch)
        epoch += 1
        for batch in loader:
            if step == p.finetune_steps:
                break
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = model(batch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
    bar.close()
    head = torch.nn.Sequential(model.encoder, model.head)
    logits = encode(head, data.subset(test).crops(), meta["image_size"], p.batch_size)
    return f1_per_au(data.labels[test], (1 / (1 + np.exp(-logits)) >= p.threshold).astype(np.int8))
