"""Stage `evaluate`: an encoder -> numbers a reviewer can trust (the protocol: docs/method.md, `clpau evaluate`).

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

from clpau.core.benchmarks import LabelledSet, check_pretraining_disjoint, load_labelled, read_folds, split
from clpau.core.fileio import save_torch, write_json, write_text
from clpau.core.params import BenchmarkParams
from clpau.eval.finetune import finetune_fold
from clpau.eval.independence import person_independence
from clpau.eval.params import EvaluateParams
from clpau.eval.probe import encode, fit_probe, identity_accuracy, probe_proba, subsample
from clpau.eval.scores import f1_per_au, nanmean, nanstd, spread


def _features(encoder_path: Path, data: LabelledSet, p: EvaluateParams, n_folds: int) -> tuple[list, dict]:
    """One feature matrix per fold (the same one unless the encoder is per fold) and the encoder's metadata."""
    from clpau.train.encoder import encoder_folds, load_encoder

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


def pretraining_identities(roots: list[Path | str]) -> set[str]:
    import pandas as pd

    ids: set[str] = set()
    from clpau.data.clips import clip_table

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
        efficiency[f"{frac:g}"] = {"f1_mean": _r(np.mean(means)), "f1_std": _r(spread(means)), "runs": len(means)}
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
        metrics["finetune"] = {"f1_mean": _r(np.mean(tuned_folds)), "f1_std": _r(spread(tuned_folds)),
                               "steps": p.finetune_steps,
                               "f1_folds": {f"fold{k}": _r(v) for k, v in enumerate(tuned_folds)},
                               "f1": {f"AU{a}": _r(v) for a, v in zip(aus, nanmean(tuned, axis=0), strict=True)}}
    p.plots_dir.mkdir(parents=True, exist_ok=True)
    _write_tables(p.plots_dir, aus, full, efficiency)
    from clpau.eval.plots import embedding_plot, label_efficiency_plot, per_au_plot

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
    return {"f1_mean": _r(np.mean(fold_means)), "f1_std": _r(spread(fold_means)),
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
    if v is None:
        return None
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
