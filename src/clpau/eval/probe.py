"""The frozen-feature probes: features of face crops, the class-balanced linear AU probe (L-BFGS), the identity
probe of identity leakage, subject-balanced subsampling."""

from __future__ import annotations

import math

import numpy as np
import torch

from clpau.core.labels import UNKNOWN
from clpau.data.augment import augment_view


@torch.no_grad()
def encode(net: torch.nn.Module, crops: np.ndarray, image_size: int, batch_size: int = 512) -> np.ndarray:
    """(N, D) float32 features of (N, S, S, 3) uint8 crops, resized as in training, no augmentation."""
    net.eval()
    out = []
    for i in range(0, len(crops), batch_size):
        out.append(net(augment_view(crops[i: i + batch_size], None, image_size, augment=False)).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _lbfgs(params: list[torch.Tensor], loss_fn, iters: int) -> None:
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def fit_probe(x: np.ndarray, y: np.ndarray, weight_decay: float = 1e-3, iters: int = 200) -> dict:
    """Class-balanced multi-label logistic regression; y (N, A) 0/1 with 9 = unknown. Returns plain tensors:
    mean, std (standardisation), weight (D, A), bias (A)."""
    xt = torch.from_numpy(x).double()
    mean, std = xt.mean(0), xt.std(0).clamp_min(1e-6)
    xs = (xt - mean) / std
    yt = torch.from_numpy(y.astype(np.int64))
    known = yt != UNKNOWN
    pos, neg = (yt == 1) & known, (yt == 0) & known
    n_pos, n_neg = pos.sum(0).double(), neg.sum(0).double()
    n = n_pos + n_neg
    w_pos = torch.where(n_pos > 0, n / (2 * n_pos.clamp_min(1)), torch.zeros_like(n))
    w_neg = torch.where(n_neg > 0, n / (2 * n_neg.clamp_min(1)), torch.zeros_like(n))
    sample_w = pos.double() * w_pos + neg.double() * w_neg
    target = pos.double()
    weight = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, requires_grad=True)
    # start each AU at its training base rate (an AU with no positive stays "absent")
    rate = ((n_pos + 0.5) / (n + 1.0)).clamp(1e-4, 1 - 1e-4)
    bias = torch.log(rate / (1 - rate)).clone().requires_grad_(True)
    denom = known.sum().clamp_min(1).double()

    def loss_fn():
        logits = xs @ weight + bias
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight=sample_w,
                                                                   reduction="sum")
        return bce / denom + 0.5 * weight_decay * (weight ** 2).sum()

    _lbfgs([weight, bias], loss_fn, iters)
    return {"mean": mean.float(), "std": std.float(), "weight": weight.detach().float(),
            "bias": bias.detach().float()}


def probe_proba(probe: dict, x: np.ndarray) -> np.ndarray:
    xs = (torch.from_numpy(x).float() - probe["mean"]) / probe["std"]
    return torch.sigmoid(xs @ probe["weight"] + probe["bias"]).numpy()


def identity_accuracy(x: np.ndarray, subjects: np.ndarray, order: np.ndarray, weight_decay: float = 1e-2,
                      iters: int = 200) -> tuple[float, float]:
    """Linear identity classifier: each subject's frames in time `order`, earlier half to train, later half to
    test. Returns (accuracy, chance)."""
    names, y = np.unique(subjects, return_inverse=True)
    train = np.zeros(len(x), bool)
    for s in range(len(names)):
        idx = np.nonzero(y == s)[0]
        idx = idx[np.argsort(order[idx], kind="stable")]
        train[idx[: len(idx) // 2]] = True
    xt = torch.from_numpy(x).double()
    mean, std = xt[train].mean(0), xt[train].std(0).clamp_min(1e-6)
    xs = (xt - mean) / std
    yt = torch.from_numpy(y)
    weight = torch.zeros(x.shape[1], len(names), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(names), dtype=torch.float64, requires_grad=True)
    tr = torch.from_numpy(train)

    def loss_fn():
        logits = xs[tr] @ weight + bias
        return torch.nn.functional.cross_entropy(logits, yt[tr]) + 0.5 * weight_decay * (weight ** 2).sum()

    _lbfgs([weight, bias], loss_fn, iters)
    with torch.no_grad():
        pred = (xs[~tr] @ weight + bias).argmax(1)
    return float((pred == yt[~tr]).double().mean()), 1.0 / len(names)


def subsample(subjects: np.ndarray, mask: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """`fraction` of each subject's frames within `mask` (at least one per subject), drawn with `seed`."""
    if fraction >= 1:
        return mask.copy()
    rng = np.random.default_rng(seed)
    out = np.zeros_like(mask)
    for s in np.unique(subjects[mask]):
        idx = np.nonzero(mask & (subjects == s))[0]
        out[rng.choice(idx, max(1, math.ceil(fraction * len(idx))), replace=False)] = True
    return out
