"""Who is in a video, by face: dlib's 128-d face descriptor (ResNet, 99.38 % on LFW; King, dlib 19.x) compared by
Euclidean distance. Extraction keeps a descriptor per video (the median over a few well-detected frames of the
followed face) and one per other face it saw; this module compares and groups them.

Distances measured on the real sample videos and copies of them (docs/operations.md, "Who is in a video"): the same
person 0.03-0.30 (a mirrored, re-encoded, darkened, cropped or trimmed copy), different people 0.6 and more; dlib
documents 0.6 as its same-person threshold. Descriptors are biometric data: they stay in the extract outputs'
videos.parquet on the user's storage, never in logs or Prefect artifacts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DIM = 128


def as_matrix(descriptors: Sequence) -> np.ndarray:
    """(N, 128) float32 from a sequence of descriptors (lists or arrays, as videos.parquet holds them)."""
    rows = [np.asarray(d, np.float32) for d in descriptors]
    return np.stack(rows) if rows else np.zeros((0, DIM), np.float32)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances between descriptors."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def cluster(descriptors: np.ndarray, threshold: float) -> np.ndarray:
    """Person labels 0, 1, ... (in order of first appearance): descriptors closer than `threshold` are one person,
    and so is every chain of them (single linkage: a person filmed in two lights links through the recordings
    between). Deterministic: the same descriptors in the same order give the same labels."""
    n = len(descriptors)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n:
        close = np.argwhere(np.triu(distances(descriptors, descriptors) < threshold, 1))
        for i, j in close:
            ri, rj = root(i), root(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    roots = [root(i) for i in range(n)]
    order = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return np.array([order[r] for r in roots], dtype=np.int64)


def confusions(descriptors: np.ndarray, names: Sequence[str], threshold: float) -> tuple[int, int]:
    """(pairs of differently named descriptors closer than `threshold`, all such pairs): how often the descriptor
    would call two known different people one."""
    names = np.asarray(list(names))
    if len(names) < 2:
        return 0, 0
    other = np.triu(names[:, None] != names[None, :], 1)
    close = distances(descriptors, descriptors) < threshold
    return int((close & other).sum()), int(other.sum())


def summarise(person: np.ndarray, others: np.ndarray, threshold: float) -> dict:
    """A video's faces from its sampled descriptors: `descriptor` (the followed face's element-wise median, robust
    to a frame or two of another face), `descriptor_frames` (how many it came from) and `other_faces` (one median
    descriptor per other person the scans found: those within `threshold` of each other or of the followed face
    are one)."""
    desc = np.median(person, 0).astype(np.float32) if len(person) else None
    tracks: list[list[np.ndarray]] = []
    if len(others):
        labels = cluster(others, threshold)
        for k in range(int(labels.max()) + 1):
            group = others[labels == k]
            median = np.median(group, 0).astype(np.float32)
            if desc is None or np.linalg.norm(median - desc) >= threshold:
                tracks.append(median)
    return {"descriptor": None if desc is None else desc.tolist(), "descriptor_frames": int(len(person)),
            "other_faces": [t.tolist() for t in tracks]}
