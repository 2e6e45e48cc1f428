"""AU occurrence labels in the BP4D CSV layout: a frame-number column, then one column per AU number, values
0/1 and 9 = unknown (masked out of loss and F1). The synthetic benchmark writes this layout; real BP4D uses it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

UNKNOWN = 9


class LabelError(ValueError):
    """A label file that cannot be read; the message names the file and the line."""


def read_occurrence_csv(path: Path | str, aus: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(frames (N,), labels (N, len(aus)) int8 with 9 = unknown). AUs missing from the file are unknown."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise LabelError(f"{path}: empty label file")
    header = [h.strip() for h in rows[0]]
    try:
        columns = [int(float(h)) for h in header[1:]]
    except ValueError:
        raise LabelError(f"{path}:1: header must be a frame column then AU numbers, got {header[:6]}…") from None
    where = {au: columns.index(au) + 1 for au in aus if au in columns}
    frames, labels = [], []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise LabelError(f"{path}:{line_no}: {len(row)} fields, the header has {len(header)}")
        try:
            frame = int(float(row[0]))
            values = [int(float(row[where[au]])) if au in where else UNKNOWN for au in aus]
        except ValueError:
            raise LabelError(f"{path}:{line_no}: not a number in {row[:6]}…") from None
        bad = [v for v in values if v not in (0, 1, UNKNOWN)]
        if bad:
            raise LabelError(f"{path}:{line_no}: AU occurrence must be 0, 1 or 9, got {bad[0]}")
        frames.append(frame)
        labels.append(values)
    return np.asarray(frames, np.int64), np.asarray(labels, np.int8).reshape(-1, len(aus))
