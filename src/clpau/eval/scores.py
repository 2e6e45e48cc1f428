"""Scores shared by evaluation, its plots and the comparison: F1 of the positive class, and means that skip the
undefined entries (NaN) quietly.

One convention for spread everywhere in clpau — over folds, seeds, runs, in metrics files, tables and plots — the
sample standard deviation (n − 1) of the defined entries: `nanstd`, `spread`."""

from __future__ import annotations

import warnings

import numpy as np

from clpau.core.labels import UNKNOWN


def f1_per_au(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(A,) F1 of the positive class per column; NaN where undefined (no positive and none predicted). Labels
    equal to 9 (unknown) are ignored."""
    known = y != UNKNOWN
    pos, hit = (y == 1) & known, (pred == 1) & known
    tp = (pos & hit).sum(0)
    fp = (~pos & hit).sum(0)
    fn = (pos & ~hit).sum(0)
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def nanmean(a: np.ndarray, axis=None) -> np.ndarray:
    """Mean over the defined entries; NaN (not a warning) where none is defined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def nanstd(a: np.ndarray, axis=None) -> np.ndarray:
    """Sample standard deviation (n − 1) over the defined entries; NaN (not a warning) where fewer than two are."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(a, axis=axis, ddof=1)


def spread(values) -> float | None:
    """`nanstd` of a list of figures (folds' or seeds'), None where fewer than two are defined."""
    v = np.asarray([np.nan if x is None else x for x in values], dtype=float)
    return float(nanstd(v)) if np.isfinite(v).sum() > 1 else None
