"""AU label files of the benchmarks, read into one form: frame numbers and an (N, n_aus) int8 array of 0/1, with
9 = unknown (masked out of loss and F1).

- Occurrence CSV (BP4D, GFT, the synthetic benchmark): a frame-number column, then one column per AU, headed by
  the AU number (``12``) or its name (``AU12``, ``AU012``); values 0/1/9.
- DISFA: per subject one text file per AU, ``SN001_au12.txt``, lines ``frame,intensity`` with intensity 0-5;
  occurrence = intensity >= threshold (2, the common rule).
A malformed row raises LabelError naming the file and the line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

UNKNOWN = 9


class LabelError(ValueError):
    """A label file that cannot be read; the message names the file and the line."""


def _au_number(name: str) -> int:
    name = name.strip().upper()
    return int(float(name[2:] if name.startswith("AU") else name))


def read_occurrence_csv(path: Path | str, aus: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(frames (N,), labels (N, len(aus)) int8 with 9 = unknown). AUs missing from the file are unknown."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise LabelError(f"{path}: empty label file")
    header = [h.strip() for h in rows[0]]
    try:
        columns = [_au_number(h) for h in header[1:]]
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


def read_disfa_subject(folder: Path | str, subject: str, aus: list[int], threshold: int = 2
                       ) -> tuple[np.ndarray, np.ndarray]:
    """DISFA's labels of one subject (`folder/SN001_au1.txt`, …): occurrence = intensity >= threshold. Frames that
    an AU file lacks are unknown for that AU; an AU without a file is unknown throughout."""
    folder = Path(folder)
    per_au: dict[int, dict[int, int]] = {}
    for au in aus:
        path = folder / f"{subject}_au{au}.txt"
        if not path.exists():
            continue
        values: dict[int, int] = {}
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.replace("\t", ",").split(",") if p.strip()]
            if len(parts) != 2:
                raise LabelError(f"{path}:{line_no}: expected 'frame,intensity', got {line.strip()[:40]!r}")
            try:
                frame, intensity = int(float(parts[0])), int(float(parts[1]))
            except ValueError:
                raise LabelError(f"{path}:{line_no}: not a number in {line.strip()[:40]!r}") from None
            if intensity == UNKNOWN:
                values[frame] = UNKNOWN
            elif 0 <= intensity <= 5:
                values[frame] = int(intensity >= threshold)
            else:
                raise LabelError(f"{path}:{line_no}: DISFA intensity must be 0-5 (or 9), got {intensity}")
        per_au[au] = values
    if not per_au:
        raise LabelError(f"{folder}: no label file {subject}_au<N>.txt for AUs {aus}")
    frames = np.array(sorted(set().union(*(v.keys() for v in per_au.values()))), np.int64)
    labels = np.full((len(frames), len(aus)), UNKNOWN, np.int8)
    for j, au in enumerate(aus):
        if au in per_au:
            labels[:, j] = [per_au[au].get(int(f), UNKNOWN) for f in frames]
    return frames, labels
