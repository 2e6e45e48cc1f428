"""`clpau trainset`: base corpus + accepted batches as one manifest that pretraining reads, its composition, and the
guard that keeps the labelled benchmark's evaluation subjects out of pretraining."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from clpau.config import BenchmarkParams, TrainsetParams
from clpau.data.datasets import ClipDataset
from clpau.ops.trainset import TrainsetError, assemble


def _pool(tmp_path, batches, name="b1"):
    batch = tmp_path / "pool" / name
    shutil.copytree(batches["good"][1], batch / "clips")
    (batch / "batch.json").write_text(json.dumps({"batch": name}))
    return batch


def _bench(tmp_path, subjects=("S001",), videos=None):
    folds = tmp_path / "folds.yaml"
    folds.write_text(yaml.safe_dump({"folds": [list(subjects)]}))
    clips = tmp_path / "bench"
    clips.mkdir(exist_ok=True)
    if videos is not None:
        videos.to_parquet(clips / "videos.parquet")
    return BenchmarkParams(folds=folds, clips=clips)


def test_trainset_holds_base_and_every_accepted_batch_and_reads_like_an_extract_output(tmp_path, batches):
    _pool(tmp_path, batches)
    (tmp_path / "pool" / "not_a_batch").mkdir()  # a folder without batch.json (an interrupted move) is left out
    p = TrainsetParams(base=[batches["pool"][1]], pool=tmp_path / "pool", out_dir=tmp_path / "trainset",
                       metrics=tmp_path / "metrics.json")
    result = assemble(p, _bench(tmp_path))
    base = pd.read_parquet(batches["pool"][1] / "clips.parquet")
    good = pd.read_parquet(batches["good"][1] / "clips.parquet")
    assert result["batches"] == ["b1"]
    assert result["total"]["clips"] == len(base) + len(good)
    assert result["total"]["videos"] == 24 + 8 and result["total"]["identities"] == 24 + 8
    assert result["sources"]["pool:b1"]["clips"] == len(good)
    assert abs(result["sources"]["pool:b1"]["hours"] - 8 * 40 / 25 / 3600) < 1e-3  # 8 videos of 40 frames at 25 fps
    assert json.loads(p.metrics.read_text())["trainset"] == result["total"]
    # pretraining reads the manifest: the same frames as the batch's own extract output
    ds = ClipDataset([p.out_dir], clip_len=4, augment=False)
    own = ClipDataset([batches["good"][1]], clip_len=4, augment=False)
    i = int(np.flatnonzero(ds.clips["source"].to_numpy() == "pool:b1")[0])
    assert np.array_equal(ds.frames(i), own.frames(0))


def test_a_pool_batch_with_an_evaluation_subject_stops_the_trainset(tmp_path, batches):
    _pool(tmp_path, batches)
    p = TrainsetParams(base=[batches["pool"][1]], pool=tmp_path / "pool", out_dir=tmp_path / "trainset",
                       metrics=tmp_path / "metrics.json")
    good = pd.read_parquet(batches["good"][1] / "videos.parquet")
    # the same file as a benchmark video
    bench = _bench(tmp_path, videos=pd.DataFrame({"video": ["S001_T1.mp4"], "sha256": [good["sha256"].iloc[2]]}))
    with pytest.raises(TrainsetError, match=r"pool batch b1: .* is the labelled benchmark's video S001_T1"):
        assemble(p, bench)
    # a video named as an evaluation subject (identity prefix before '_')
    subject = good["video"].map(lambda v: v.split("/")[-1].split("_")[0]).iloc[0]
    with pytest.raises(TrainsetError, match=f"named as the labelled benchmark's evaluation subject {subject}"):
        assemble(p, _bench(tmp_path, subjects=(subject,)))
    assert not p.out_dir.exists()  # nothing half-written


@pytest.mark.parametrize(("dataset", "subject", "names"), [
    ("synth", "S002", ["S002_visit", "S002"]),
    ("bp4d", "F001", ["F001_T1", "F001_T8_again"]),
    ("disfa", "SN001", ["LeftVideoSN001_comp", "RightVideoSN001_Comp"]),
    ("gft", "017", ["017_1_2", "017"]),
])
def test_the_name_guard_reads_names_as_the_benchmark_names_its_own_videos(tmp_path, dataset, subject, names):
    """The pool's subject guard uses the benchmark's naming rule (`benchmark.subject_pattern` or the dataset's): a
    DISFA video named like the benchmark's own (`LeftVideoSN001_comp`) is caught by its name, not only by sha256."""
    from clpau.ops.trainset import benchmark_overlap

    folds = tmp_path / "folds.yaml"
    folds.write_text(yaml.safe_dump({"folds": [[subject, "X999"]]}))
    bench = BenchmarkParams(dataset=dataset, folds=folds, clips=tmp_path / "none")
    others = {"synth": "S005_visit", "bp4d": "M002_T1", "disfa": "LeftVideoSN004_comp", "gft": "018_1_2"}[dataset]
    videos = pd.DataFrame({"video": [f"inbox/{n}.mp4" for n in [*names, others]]})
    reasons = benchmark_overlap(videos, bench)
    assert sorted(reasons) == sorted(f"inbox/{n}.mp4" for n in names), reasons
    assert all(f"evaluation subject {subject} " in r for r in reasons.values())
