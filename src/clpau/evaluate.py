"""Stage `evaluate`: an encoder -> numbers a reviewer can trust (DESIGN §3).

Protocol
- Features: the frozen backbone's pooled output h of every labelled face frame (no augmentation), standardised
  with the training part's mean and std. `supervised` encoders are per fold: fold k is encoded by the backbone
  that never saw fold k's subjects.
- AU probe: one linear layer, 12 (or the dataset's) logistic outputs, class-balanced binary cross-entropy
  (each AU's positives and negatives weigh half each), unknown labels (9) masked, L2 on the weights, fitted to
  convergence with L-BFGS. Present = probability >= `threshold`.
- F1 of the positive class per AU: F1 = 2·TP / (2·TP + FP + FN) over known labels. When a test fold has no
  positive and the probe predicts none, F1 is undefined (0/0): that AU is left out of that fold's mean and the
  per-AU figure averages the folds where it is defined. With no positive but false alarms, F1 = 0.
- Folds: the committed subject-exclusive lists; fold k trains on the other parts and tests on part k. A split
  that puts a subject on both sides, or a labelled subject that is also in the pretraining data, is refused.
- Label efficiency: the probe trained on 1 %, 10 %, 100 % of each training subject's frames (subject-balanced),
  `seeds` draws each. The probe is convex, so at 100 % every seed gives the same fit: it is fitted once.
- Identity leakage: a linear identity classifier on the same features of each fold's test subjects (earlier
  half of each subject's frames to train, later half to test); accuracy and (acc - chance) / (1 - chance),
  averaged over folds. Lower = more person-independent. It saturates on the synthetic benchmark (every encoder,
  random-init included, identifies its people), so three geometric figures stand beside it (independence.py):
  `same_subject_nn`, `cross_subject_knn_f1` and `subject_variance_share`, on each fold's test subjects, averaged.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .benchmarks import LabelledSet, check_pretraining_disjoint, load_labelled, read_folds, split
from .config import BenchmarkParams, EvaluateParams
from .data import augment_view
from .fileio import save_torch, write_json, write_text
from .independence import person_independence
from .labels import UNKNOWN
from .scores import f1_per_au, nanmean, nanstd


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


def _features(encoder_path: Path, data: LabelledSet, p: EvaluateParams, n_folds: int) -> tuple[list, dict]:
    """One feature matrix per fold (the same one unless the encoder is per fold) and the encoder's metadata."""
    from .pretrain import encoder_folds, load_encoder

    if not encoder_path.exists():
        raise FileNotFoundError(f"{encoder_path} is missing: run `clpau pretrain` first")
    crops = data.crops()
    if not encoder_folds(encoder_path):
        net, meta = load_encoder(encoder_path)
        return [encode(net, crops, meta["image_size"], p.batch_size)] * n_folds, meta
    meta = load_encoder(encoder_path, fold=0)[1]
    if meta["folds"] != n_folds:
        raise ValueError(f"{encoder_path} holds {meta['folds']} per-fold encoders, the fold file {n_folds} folds")
    return [encode(load_encoder(encoder_path, fold=k)[0], crops, meta["image_size"], p.batch_size)
            for k in range(n_folds)], meta


def finetune_fold(encoder_path: Path, data: LabelledSet, train: np.ndarray, test: np.ndarray, fold: int,
                  p: EvaluateParams, progress: bool = False) -> np.ndarray:
    """The fine-tune protocol for one fold: the pretrained backbone (for `supervised`, the one that never saw this
    fold) + a linear head, all trained on the training subjects' frames (AdamW, cosine lr, class-balanced BCE, the
    pretraining augmentations), then per-AU F1 on the test subjects. Returns (A,) F1."""
    from tqdm import tqdm

    from .data import LabelledFrames
    from .hardware import autocast_dtype, resolve_precision
    from .pretrain import adamw, encoder_folds, epoch_loader, load_encoder
    from .supervised import Supervised

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
                loss = model(batch["image"], batch["labels"])["loss"]
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


def pretraining_identities(roots: list[Path | str]) -> set[str]:
    import pandas as pd

    ids: set[str] = set()
    from .data import clip_table

    for root in roots:
        table = clip_table(root)
        if table.exists():
            ids |= set(pd.read_parquet(table, columns=["identity"])["identity"].astype(str))
    return ids


def run_evaluate(bench: BenchmarkParams, p: EvaluateParams, pretrain_data: list[Path] = (), progress: bool = True,
                 log=print) -> dict:
    folds = read_folds(bench.folds)
    data = load_labelled(bench, [s for f in folds for s in f], log=log)
    check_pretraining_disjoint(set(data.subject), pretraining_identities(list(pretrain_data)))
    absent = sorted({s for f in folds for s in f} - set(data.subject))
    if absent:
        log(f"evaluate: {len(absent)} subjects of {bench.folds} have no labelled face frame, e.g. {absent[:3]}")
    feats, meta = _features(p.encoder, data, p, len(folds))
    runs, identity, independence = probe_folds(feats, data, folds, p, p.label_fractions, progress)
    aus = data.aus
    full = np.array([f1 for _, _, f1 in runs[max(p.label_fractions)]])  # (folds, A)
    fold_means = nanmean(full, axis=1)
    headline = summary_figures(full, independence)
    per_au = nanmean(full, axis=0)
    acc = float(np.mean([a for a, _ in identity]))
    chance = float(np.mean([c for _, c in identity]))
    efficiency = {}
    for frac, rs in runs.items():
        means = [float(nanmean(f1)) for _, _, f1 in rs]
        efficiency[f"{frac:g}"] = {"f1_mean": _r(np.mean(means)), "f1_std": _r(np.std(means)), "runs": len(means)}
    metrics = {
        "method": meta["method"],
        "dataset": bench.dataset,
        "encoder_step": int(meta["step"]),
        "f1_mean": headline["f1_mean"],
        "f1_std": headline["f1_std"],
        "f1": {f"AU{a}": _r(v) for a, v in zip(aus, per_au, strict=True)},
        # a mapping, not a list: DVC shows mappings as columns and drops lists from `dvc exp show`
        "f1_folds": {f"fold{k}": _r(v) for k, v in enumerate(fold_means)},
        "identity_acc": _r(acc),
        "identity_chance": _r(chance),
        "identity_leakage": _r((acc - chance) / (1 - chance)),
        # the identity probe saturates on the synthetic people (random features: 0.999); these do not
        **{name: headline[name] for name in independence[0]},
        "label_efficiency": efficiency,
        "frames": len(data),
        "subjects": int(len(set(data.subject))),
    }
    floor = read_floor(p.floor, meta, bench, log)
    if floor is not None:
        metrics["random_init"] = floor
    if p.finetune_steps:
        tuned = np.array([finetune_fold(p.encoder, data, *split(data.subject, folds, k), k, p, progress)
                          for k in range(len(folds))])
        tuned_folds = nanmean(tuned, axis=1)
        metrics["finetune"] = {"f1_mean": _r(np.mean(tuned_folds)), "f1_std": _r(np.std(tuned_folds)),
                               "steps": p.finetune_steps,
                               "f1_folds": {f"fold{k}": _r(v) for k, v in enumerate(tuned_folds)},
                               "f1": {f"AU{a}": _r(v) for a, v in zip(aus, nanmean(tuned, axis=0), strict=True)}}
    p.plots_dir.mkdir(parents=True, exist_ok=True)
    _write_tables(p.plots_dir, aus, full, efficiency)
    from .plots import embedding_plot, label_efficiency_plot, per_au_plot

    per_au_plot(p.plots_dir / "per_au_f1.png", aus, full, metrics)
    label_efficiency_plot(p.plots_dir / "label_efficiency.png", efficiency, meta["method"])
    embedding_plot(p.plots_dir / "embedding.png", feats[0], data, p.embedding_frames, meta["method"])
    _save_final_probe(p, data, feats, meta, bench)
    write_json(p.metrics, metrics, sort_keys=False)  # AUs in the dataset's order
    return metrics


def probe_folds(feats: list[np.ndarray], data: LabelledSet, folds: list[list[str]], p: EvaluateParams,
                fractions: list[float], progress: bool = False) -> tuple[dict, list, list]:
    """The protocol on features `feats` (one matrix per fold): for each label fraction the AU probes' per-AU F1 on
    each fold's test subjects, as (fold, seed, F1) — fractions below 1 with `p.seeds` draws —, and per fold the
    identity probe's (accuracy, chance) and the person-independence figures of its test subjects."""
    from tqdm import tqdm

    order = np.lexsort((data.frame, data.video)).argsort()  # time order: video name, then frame
    runs = {frac: [] for frac in fractions}  # fraction -> list of (fold, seed, per-AU F1)
    identity = []
    independence = []  # per fold: independence.py's figures on the test subjects' frames
    jobs = [(k, frac, seed) for k in range(len(folds)) for frac in fractions
            for seed in (range(p.seeds) if frac < 1 else [0])]
    bar = tqdm(total=len(jobs) + len(folds), desc="evaluate", unit="probe", disable=not progress)
    for k in range(len(folds)):
        train, test = split(data.subject, folds, k)
        x = feats[k]
        for frac in fractions:
            for seed in range(p.seeds) if frac < 1 else [0]:
                use = subsample(data.subject, train, frac, seed)
                probe = fit_probe(x[use], data.labels[use], p.weight_decay, p.probe_iters)
                pred = (probe_proba(probe, x[test]) >= p.threshold).astype(np.int8)
                runs[frac].append((k, seed, f1_per_au(data.labels[test], pred)))
                bar.update(1)
        identity.append(identity_accuracy(x[test], data.subject[test], order[test]))
        independence.append(person_independence(x[test], data.subject[test], data.video[test], data.labels[test]))
        bar.update(1)
    bar.close()
    return runs, identity, independence


def summary_figures(full: np.ndarray, independence: list[dict]) -> dict:
    """The headline figures of a protocol run: mean F1 over AUs, its mean and std over the folds (`full`: per fold
    and AU, the probes on all training frames), and each person-independence figure averaged over the folds."""
    fold_means = nanmean(full, axis=1)
    return {"f1_mean": _r(np.mean(fold_means)), "f1_std": _r(np.std(fold_means)),
            **{name: _r(nanmean([f[name] for f in independence])) for name in independence[0]}}


FLOOR_FIGURES = ("f1_mean", "same_subject_nn", "cross_subject_knn_f1")


def read_floor(path: Path, meta: dict, bench: BenchmarkParams, log=print) -> dict | None:
    """The random-init encoder's figures (`clpau floor`) when they were measured on this benchmark with the
    evaluated encoder's architecture and input size — the floor pretraining started from; None otherwise."""
    import json

    if not Path(path).exists():
        log(f"evaluate: no random-init figures ({path}): run `clpau floor` to have them beside the result")
        return None
    floor = json.loads(Path(path).read_text())
    ours = {"backbone": meta["backbone"], "image_size": int(meta["image_size"]), "dataset": bench.dataset}
    theirs = {k: floor.get(k) for k in ours}
    if theirs != ours:
        log(f"evaluate: {path} was measured for {theirs}, the encoder is {ours}: not shown (rerun `clpau floor`)")
        return None
    return {k: floor[k] for k in (*FLOOR_FIGURES, "f1_std", "subject_variance_share", "seed")}


def _r(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else round(v, 4)


def _write_tables(folder: Path, aus: list[int], full: np.ndarray, efficiency: dict) -> None:
    lines = ["au,f1_mean,f1_std," + ",".join(f"f1_fold{k}" for k in range(len(full)))]
    for j, a in enumerate(aus):
        col = full[:, j]
        lines.append(f"AU{a},{_fmt(nanmean(col))},{_fmt(nanstd(col))}," + ",".join(_fmt(v) for v in col))
    write_text(folder / "per_au.csv", "\n".join(lines) + "\n")
    rows = ["fraction,f1_mean,f1_std"] + [f"{k},{v['f1_mean']},{v['f1_std']}" for k, v in efficiency.items()]
    write_text(folder / "label_efficiency.csv", "\n".join(rows) + "\n")


def _fmt(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.4f}"


def _save_final_probe(p: EvaluateParams, data: LabelledSet, feats: list, meta: dict, bench: BenchmarkParams) -> None:
    """The deployable detector for `clpau predict`: the probe on every labelled subject (on fold 0's backbone when
    the encoder is per fold)."""
    probe = fit_probe(feats[0], data.labels, p.weight_decay, p.probe_iters)
    blob = {**probe, "aus": torch.tensor(data.aus), "threshold": p.threshold, "dataset": bench.dataset,
            "method": meta["method"], "encoder_fold": 0 if meta["folds"] else -1,
            "image_size": int(meta["image_size"]), "frames": len(data)}
    save_torch(blob, p.probe_out)
