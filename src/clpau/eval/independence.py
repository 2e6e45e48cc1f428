"""Person-independence of frozen features: do frames lie near frames of the same person, or of the same action?

The linear identity probe (`identity_leakage` in evaluate.py) saturates on the synthetic benchmark: its people differ
in skin, hair, background and light, so any features — random-init ones included (0.999) — tell them apart. These
three figures measure how much of the feature space's *geometry* the person owns instead. All are computed on the
features standardised over the frames given (zero mean, unit variance per dimension); neighbours are by cosine
similarity of the standardised features, k = 10 by default.

- `same_subject_nn`: for each frame, the share S of its k nearest neighbours — frames of its own video excluded, so
  that near-duplicate consecutive frames do not count — that belong to its own subject; C, the share of its own
  subject's frames among the candidates (chance). Reported as (mean S − mean C) / (1 − mean C): 0 = the person does
  not shape the neighbourhoods (chance), 1 = every neighbour is the same person. Lower is more person-independent.
- `cross_subject_knn_f1`: each frame's AUs predicted by the k nearest frames of *other* subjects only (an AU is
  present when at least half of the neighbours that have a known label show it; no training), F1 of the positive
  class per AU, mean over AUs. Higher = frames of different people showing the same action lie together.
- `subject_variance_share`: the share of the standardised features' total variance that lies between subject
  means, Σ_s n_s ‖μ_s − μ‖² / Σ_i ‖x_i − μ‖². 0 = the person explains nothing, 1 = features are constant per person.

tests/test_independence.py validates each against its two ends: the synthetic benchmark's ground-truth AU
intensities (an oracle person-independent feature) and per-subject constant or random-init features.
"""

from __future__ import annotations

import numpy as np
import torch

from clpau.core.labels import UNKNOWN
from clpau.eval.scores import f1_per_au, nanmean

K = 10


def _standardised(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per dimension over the frames (float64)."""
    xt = np.asarray(x, np.float64)
    return (xt - xt.mean(0)) / np.maximum(xt.std(0), 1e-9)


def _unit_rows(x: np.ndarray) -> torch.Tensor:
    """Standardised, then unit length: cosine similarity is a dot product."""
    return torch.nn.functional.normalize(torch.from_numpy(_standardised(x)), dim=1).float()


def knn(x: np.ndarray, groups: np.ndarray, k: int = K, chunk: int = 2048) -> np.ndarray:
    """(N, k) indices of each frame's k nearest frames (cosine, standardised features) among the frames of *other*
    groups (`groups`: a video or a subject per frame)."""
    z = _unit_rows(x)
    g = torch.from_numpy(np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1))
    if int(torch.bincount(g).max()) > len(g) - k:
        raise ValueError(f"fewer than k={k} frames outside some group: add frames or lower k")
    out = []
    for i in range(0, len(z), chunk):
        sim = z[i: i + chunk] @ z.T
        sim[g[i: i + chunk, None] == g[None]] = -torch.inf
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out).numpy()


def same_subject_nn(x: np.ndarray, subject: np.ndarray, video: np.ndarray, k: int = K) -> float:
    """(mean share of same-subject neighbours − chance) / (1 − chance); neighbours from other videos only."""
    subject, video = np.asarray(subject), np.asarray(video)
    nn = knn(x, video, k)
    share = float((subject[nn] == subject[:, None]).mean())
    # chance per frame: its subject's frames outside its own video among all frames outside its own video
    _, subj_n = np.unique(subject, return_counts=True)
    subj_count = dict(zip(np.unique(subject), subj_n, strict=True))
    pairs, pair_n = np.unique(np.stack([subject, video]).T, axis=0, return_counts=True)
    video_count = {(s, v): n for (s, v), n in zip(map(tuple, pairs), pair_n, strict=True)}
    own = np.array([subj_count[s] - video_count[(s, v)] for s, v in zip(subject, video, strict=True)], float)
    others = np.array([len(subject) - video_count[(s, v)] for s, v in zip(subject, video, strict=True)], float)
    chance = float((own / others).mean())
    # undefined where no subject has a second video (no same-subject candidate) or every candidate is the subject's
    return (share - chance) / (1 - chance) if 0 < chance < 1 else float("nan")


def cross_subject_knn_f1(x: np.ndarray, subject: np.ndarray, labels: np.ndarray, k: int = K) -> float:
    """Mean over AUs of the F1 of AUs voted by the k nearest frames of other subjects (unknown labels abstain)."""
    nn = knn(x, subject, k)
    neighbour = labels[nn]  # (N, k, A)
    known = neighbour != UNKNOWN
    votes = ((neighbour == 1) & known).sum(1)
    voters = known.sum(1)
    pred = ((voters > 0) & (2 * votes >= voters)).astype(np.int8)
    return float(nanmean(f1_per_au(labels, pred)))


def subject_variance_share(x: np.ndarray, subject: np.ndarray) -> float:
    """Between-subject share of the standardised features' total variance."""
    xs = _standardised(x)
    total = float((xs ** 2).sum())
    between = 0.0
    for s in np.unique(subject):
        rows = xs[np.asarray(subject) == s]
        between += len(rows) * float((rows.mean(0) ** 2).sum())
    return between / total if total > 0 else float("nan")


def person_independence(x: np.ndarray, subject: np.ndarray, video: np.ndarray, labels: np.ndarray,
                        k: int = K) -> dict[str, float]:
    """All three figures for one set of frames."""
    return {"same_subject_nn": same_subject_nn(x, subject, video, k),
            "cross_subject_knn_f1": cross_subject_knn_f1(x, subject, labels, k),
            "subject_variance_share": subject_variance_share(x, subject)}
