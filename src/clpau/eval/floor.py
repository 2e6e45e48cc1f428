"""Stage `floor`: the random-init encoder under the evaluation protocol — where pretraining starts from.

An untrained backbone of the same architecture, input size and seed as `pretrain` (the weights `pretrain.method:
random` writes), probed exactly as `clpau evaluate` probes a trained one: the same folds, the linear probe on all of
each training part's frames, the person-independence figures on each fold's test subjects. `evaluate` shows these
figures beside its own (`random_init` in its metrics and its printed line), so one run says how far pretraining
moved the features. Nothing pretraining writes goes in, so DVC reruns this stage only when the benchmark, the
protocol or the architecture changes — not for every pretraining run.
"""

from __future__ import annotations

import torch

from clpau.core.benchmarks import load_labelled, read_folds
from clpau.core.fileio import write_json
from clpau.core.params import BenchmarkParams
from clpau.eval.evaluate import probe_folds, summary_figures
from clpau.eval.params import EvaluateParams
from clpau.eval.probe import encode
from clpau.methods.backbones import build_backbone
from clpau.train.params import PretrainParams


def run_floor(bench: BenchmarkParams, ev: EvaluateParams, pre: PretrainParams, progress: bool = True,
              log=print) -> dict:
    """Measure the random-init encoder and write `ev.floor`."""
    import numpy as np

    folds = read_folds(bench.folds)
    data = load_labelled(bench, [s for f in folds for s in f], log=log)
    torch.manual_seed(pre.seed)  # as `pretrain` seeds before it builds the backbone: the same weights
    net = build_backbone(pre.backbone)
    feats = [encode(net, data.crops(), pre.image_size, ev.batch_size)] * len(folds)
    runs, _, independence = probe_folds(feats, data, folds, ev, [1.0], progress)
    full = np.array([f1 for _, _, f1 in runs[1.0]])
    figures = {"dataset": bench.dataset, "backbone": pre.backbone, "image_size": pre.image_size, "seed": pre.seed,
               **summary_figures(full, independence)}
    write_json(ev.floor, figures, sort_keys=False)
    return figures
