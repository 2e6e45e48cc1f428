"""The quality gate (Great Expectations) and the drift check (Evidently) on real extract outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from clpau.config import DriftParams, ExtractParams, PretrainParams, ValidateParams
from clpau.ops.drift import run_drift
from clpau.ops.validate import run_validate
from clpau.train.pretrain import run_pretrain
from clpau.video.extract import run_extract


def test_good_batch_passes_the_gate(batches, tmp_path):
    s = run_validate(batches["good"][1], ValidateParams(), tmp_path)
    assert s["success"], s["failed"]
    assert s["checked"] == 11 and s["videos"] == 8 and s["clips"] > 8
    assert (tmp_path / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()
    assert json.loads((tmp_path / "validation.json").read_text()) == s


def test_bad_batch_fails_with_a_reason_per_expectation(batches, tmp_path):
    videos = pd.read_parquet(batches["bad"][1] / "videos.parquet")
    status = dict(zip(videos["video"].str.rsplit("/", n=1).str[-1], videos["status"], strict=True))
    # dlib's HOG still finds the face in the very dark room: the gate has to catch it by brightness
    assert status == {"dark_room.mp4": "ok", "noise.mp4": "no_face", "tiny.mp4": "face_too_small",
                      "corrupt.mp4": "unreadable"}
    cmd = [sys.executable, "-m", "clpau", "validate", str(batches["bad"][1]), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout
    assert "at least 50% of the videos give face clips (status ok): 75 % of rows fail" in proc.stderr
    assert "brightness in [40.0, 220.0] in 90% of clips: 100 % of rows fail" in proc.stderr
    failed = json.loads((tmp_path / "validation.json").read_text())["failed"]
    assert {(f["table"], f["column"]) for f in failed} >= {("videos", "status"), ("videos", "face_share"),
                                                          ("clips", "brightness")}
    # each video's own reasons, named, beside the batch's: what the ingest flow quarantines them for
    summary = json.loads((tmp_path / "validation.json").read_text())
    own = {v.rsplit("/", 1)[-1]: r for v, r in summary["per_video"].items()}
    assert own["noise.mp4"] == ["noise.mp4: no face clip (no_face: " + videos.set_index(
        videos["video"].str.rsplit("/", n=1).str[-1]).loc["noise.mp4", "error"] + ")"]
    assert own["tiny.mp4"][0].startswith("tiny.mp4: no face clip (face_too_small")
    assert any(r.startswith("dark_room.mp4: ") and "brightness" in r for r in own["dark_room.mp4"]), own
    assert summary["videos_passed"] == 0 and summary["batch_failed"] == [
        "1 of 4 videos give face clips (gate: at least 50%): the batch is mostly unusable, every video of it is held "
        "back"]
    assert "dark_room.mp4: " in proc.stderr and "4 of 4 videos fail on their own" in proc.stderr


def test_dark_and_duplicate_videos_are_named(batches, tmp_path):
    s = run_validate(batches["dark"][1], ValidateParams(min_brightness=60), tmp_path / "dark")
    assert not s["success"] and any(f["column"] == "brightness" for f in s["failed"]), s
    twice = tmp_path / "twice"
    twice.mkdir()
    video = next(batches["good"][0].glob("*.mp4"))
    shutil.copy(video, twice / "a.mp4")
    shutil.copy(video, twice / "b.mp4")
    run_extract([twice], tmp_path / "twice_clips", ExtractParams(), workers=2, progress=False)
    s = run_validate(tmp_path / "twice_clips", ValidateParams(), tmp_path / "dup")
    assert [f["column"] for f in s["failed"]] == ["sha256"], s["failed"]
    assert "no duplicate video" in s["failed"][0]["reason"]
    # per video: the first copy passes, the second is named as its duplicate; not a batch-wide failure
    own = {v.rsplit("/", 1)[-1]: r for v, r in s["per_video"].items()}
    assert own["a.mp4"] == [] and len(own["b.mp4"]) == 1 and own["b.mp4"][0].startswith(
        "b.mp4: the same file as a.mp4 in this batch"), own
    assert s["batch_failed"] == []


def test_drift_flags_a_lighting_shift_and_not_new_people(batches, tmp_path):
    pool = batches["pool"][1]
    pre = PretrainParams(data=[pool], method="random", out_dir=tmp_path / "m", live_dir=tmp_path / "l")
    run_pretrain(pre, progress=False, log=lambda *_: None)
    p = DriftParams(encoder=tmp_path / "m" / "encoder.pt", embedding_components=4)
    same = run_drift(pool, batches["good"][1], p, tmp_path / "good")
    assert not same["drift"], same
    assert len(same["columns"]) == 5 + 4 and same["reference_rows"] == 24 and same["current_rows"] == 8
    shifted = run_drift(pool, batches["dark"][1], p, tmp_path / "dark")
    assert shifted["drift"] and "brightness" in shifted["drifted_columns"], shifted
    assert (tmp_path / "dark" / "drift.html").stat().st_size > 10_000
    assert json.loads((tmp_path / "dark" / "drift.json").read_text())["drift"] is True
    # `clpau drift --fail-on-drift` answers with its exit status: 1 for the dark batch, 0 for the good one, and
    # without the flag a drifted batch is a report, not a failure
    from clpau.cli import EXIT_NO, main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"drift": {"embedding_components": 4}}))
    cli = ["--params", str(params), "drift", str(pool)]
    enc = ["--encoder", str(tmp_path / "m" / "encoder.pt")]
    assert main([*cli, str(batches["dark"][1]), *enc, "--fail-on-drift", "--out", str(tmp_path / "c1")]) == EXIT_NO == 1
    assert main([*cli, str(batches["dark"][1]), *enc, "--out", str(tmp_path / "c2")]) == 0
    assert main([*cli, str(batches["good"][1]), *enc, "--fail-on-drift", "--out", str(tmp_path / "c3")]) == 0
    assert json.loads((tmp_path / "c1" / "drift.json").read_text())["drift"] is True


def _qc_table(rng, n: int, brightness: float) -> pd.DataFrame:
    """Per-video columns as drift_tables makes them: the QC features and 4 embedding components."""
    cols = {c: rng.normal(0, 1, n) for c in ("det_score", "face_size", "sharpness", "landmark_jitter",
                                             "emb_0", "emb_1", "emb_2", "emb_3")}
    return pd.DataFrame({**cols, "brightness": rng.normal(brightness, 1, n)})


def test_one_qc_feature_far_off_is_drift_however_few_columns_move():
    """The single-feature clause on its own: 1 column of 9 moved (11 % < the 30 % share) is drift when it is a QC
    feature whose p-value falls below drift.feature_threshold, and only then."""
    from clpau.ops.drift import detect_drift

    rng = np.random.default_rng(0)
    ref, cur = _qc_table(rng, 60, 0.0), _qc_table(rng, 30, 3.0)
    p = DriftParams()
    found = detect_drift(ref, cur, p)
    assert found["drifted_columns"] == ["brightness"] and found["drifted_share"] == pytest.approx(1 / 9, abs=1e-4)
    assert found["drift"] and not found["share_alarm"] and found["feature_alarms"] == ["brightness"]
    assert found["columns"]["brightness"]["value"] < p.feature_threshold
    # the clause is what flags it: with a stricter feature threshold (or the column not a QC feature) it is not drift
    strict = detect_drift(ref, cur, p.model_copy(update={"feature_threshold": 0.0}))
    assert not strict["drift"] and strict["drifted_columns"] == ["brightness"]
    unlisted = detect_drift(ref, cur, p.model_copy(update={"features": ["det_score", "face_size"]}))
    assert not unlisted["drift"]
    # a smaller shift of the same feature fails its column's test (p < 0.01) but not the clause's (p < 0.001)
    mild = detect_drift(ref, _qc_table(np.random.default_rng(1), 30, 1.0), p)
    assert mild["drifted_columns"] == ["brightness"] and not mild["drift"], mild["columns"]["brightness"]
