"""Labelled AU benchmarks: which video belongs to which subject, where its labels are, the fixed folds.

| dataset | labels (`benchmark.labels_dir`)                              | subject in a video's name |
|---------|--------------------------------------------------------------|---------------------------|
| synth   | `S001_T1.csv` per video, BP4D occurrence layout              | `S001_T1.mp4` -> S001     |
| bp4d    | `F001_T1.csv` per subject_task (AU_OCC), 0/1/9               | `F001_T1.mp4` -> F001     |
| disfa   | `SN001/SN001_au1.txt` per subject and AU, intensity 0-5      | `LeftVideoSN001_comp.avi` |
| gft     | `<video stem>.csv` per video, occurrence CSV (`AU1` or `1`)  | part before the first `_` |

Labels join the extracted frames by frame number: label frame = decoded frame index + `benchmark.first_frame`.
Folds are YAML (`folds: [[subjects of part 1], …]`); each fold tests on one part and trains on the others. The
published 3-part lists of BP4D and DISFA are committed in `data/folds/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from clpau.core.labels import read_disfa_subject, read_occurrence_csv
from clpau.core.params import BenchmarkParams

SUBJECT_PATTERNS = {"synth": r"^([^_]+)_", "bp4d": r"([FM]\d{3})", "disfa": r"(SN\d{3})", "gft": r"^([^_]+)"}


class LeakError(ValueError):
    """A split that would let a subject be seen in training and testing (or in pretraining and testing)."""


def read_folds(path: Path | str) -> list[list[str]]:
    """The subject lists of a fold file; refuses a subject listed in two parts."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: fold file not found (see data/folds/ for the committed ones)")
    data = yaml.safe_load(path.read_text())
    folds = data.get("folds") if isinstance(data, dict) else None
    if not folds or not all(isinstance(f, list) and f for f in folds):
        raise ValueError(f"{path}: expected a mapping with 'folds': a list of non-empty subject lists")
    folds = [[str(s) for s in f] for f in folds]
    seen: set[str] = set()
    for f in folds:
        overlap = seen & set(f)
        if overlap:
            raise LeakError(f"{path}: subjects {sorted(overlap)} are in more than one fold (folds must be "
                            f"subject-exclusive)")
        seen |= set(f)
    return folds


def split(subjects: np.ndarray, folds: list[list[str]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, test) of fold k; refuses to return a split in which a subject is on both sides."""
    test = np.isin(subjects, folds[k])
    train = np.isin(subjects, [s for i, f in enumerate(folds) if i != k for s in f])
    both = set(subjects[train]) & set(subjects[test])
    if both or (train & test).any():
        raise LeakError(f"fold {k}: subjects {sorted(both)} would be in training and test")
    return train, test


def check_pretraining_disjoint(subjects: set[str], pretrain_identities: set[str]) -> None:
    """Labelled subjects must never be in the pretraining data (the evaluation protocol, docs/method.md)."""
    shared = subjects & pretrain_identities
    if shared:
        raise LeakError(f"subjects {sorted(shared)[:10]} of the labelled benchmark are also identities of the "
                        f"pretraining data; remove them from one of the two")


def subject_of(stem: str, b: BenchmarkParams) -> str | None:
    m = re.search(b.subject_pattern or SUBJECT_PATTERNS[b.dataset], stem)
    return m.group(1) if m else None


def read_video_labels(stem: str, subject: str, b: BenchmarkParams) -> tuple[np.ndarray, np.ndarray]:
    """(label frame numbers, (N, n_aus) int8 with 9 = unknown) for one video of the benchmark."""
    if b.dataset == "disfa":
        folder = b.labels_dir / subject if (b.labels_dir / subject).is_dir() else b.labels_dir
        return read_disfa_subject(folder, subject, b.au_list, b.disfa_threshold)
    return read_occurrence_csv(b.labels_dir / f"{stem}.csv", b.au_list)


@dataclass
class LabelledSet:
    """Every labelled face frame of a benchmark: where its crop is (shard file, row), whose it is, its labels."""

    shard: np.ndarray    # (N,) str: faces.npy path
    row: np.ndarray      # (N,) int: row in the shard
    subject: np.ndarray  # (N,) str
    video: np.ndarray    # (N,) str: video stem
    frame: np.ndarray    # (N,) int: decoded frame index (time order within a video)
    labels: np.ndarray   # (N, n_aus) int8, 0/1 and 9 = unknown
    aus: list[int]

    def __len__(self) -> int:
        return len(self.row)

    def subset(self, mask: np.ndarray) -> LabelledSet:
        return LabelledSet(self.shard[mask], self.row[mask], self.subject[mask], self.video[mask],
                           self.frame[mask], self.labels[mask], self.aus)

    def crops(self) -> np.ndarray:
        """(N, S, S, 3) uint8 aligned face crops, read by memory map."""
        out, maps = None, {}
        for i, (path, r) in enumerate(zip(self.shard, self.row, strict=True)):
            if path not in maps:
                maps[path] = np.load(path, mmap_mode="r")
            crop = maps[path][r]
            if out is None:
                out = np.empty((len(self),) + crop.shape, np.uint8)
            out[i] = crop
        return out if out is not None else np.empty((0, 0, 0, 3), np.uint8)


def load_labelled(b: BenchmarkParams, subjects: list[str] | None = None, log=print) -> LabelledSet:
    """Join the extracted face frames of `b.clips` to their labels; only `subjects` when given. Videos with no
    subject match or no label file are reported and skipped; frames without a label row are dropped."""
    videos_table = b.clips / "videos.parquet"
    if not videos_table.exists():
        raise FileNotFoundError(f"{videos_table} is missing: extract the benchmark's videos first "
                                f"(`clpau extract VIDEOS --out {b.clips}`)")
    videos = pd.read_parquet(videos_table)
    wanted = set(subjects) if subjects is not None else None
    cols: dict[str, list] = {k: [] for k in ("shard", "row", "subject", "video", "frame")}
    labels, skipped = [], []
    for _, v in videos[videos["face_frames"] > 0].iterrows():
        stem = Path(v["video"]).stem
        who = subject_of(stem, b)
        if who is None:
            skipped.append(f"{stem}: no subject in the name")
            continue
        if wanted is not None and who not in wanted:
            continue
        try:
            frames, lab = read_video_labels(stem, who, b)
        except FileNotFoundError as err:
            skipped.append(f"{stem}: {err}")
            continue
        by_frame = {f: i for i, f in enumerate(frames.tolist())}
        index = pd.read_parquet(b.clips / "frames" / v["key"] / "index.parquet", columns=["frame", "face", "row"])
        faces = index[index["face"]]
        shard = str(b.clips / "frames" / v["key"] / "faces.npy")
        for frame, r in zip(faces["frame"].tolist(), faces["row"].tolist(), strict=True):
            i = by_frame.get(frame + b.first_frame)
            if i is not None:
                cols["shard"].append(shard)
                cols["row"].append(r)
                cols["subject"].append(who)
                cols["video"].append(stem)
                cols["frame"].append(frame)
                labels.append(lab[i])
    if skipped:
        log(f"benchmark: skipped {len(skipped)} videos, e.g. {skipped[0]}")
    if not labels:
        raise ValueError(f"no labelled face frame in {b.clips} for subjects "
                         f"{sorted(wanted)[:5] if wanted else 'any'} (labels in {b.labels_dir}, "
                         f"dataset {b.dataset})")
    return LabelledSet(np.array(cols["shard"]), np.array(cols["row"]), np.array(cols["subject"]),
                       np.array(cols["video"]), np.array(cols["frame"]), np.array(labels, np.int8), b.au_list)

