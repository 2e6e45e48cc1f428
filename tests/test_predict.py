"""`clpau predict` on the real sample videos: one CSV row per decoded frame, OpenFace-style columns, a timeline."""

from __future__ import annotations

import subprocess
import sys

import av
import pandas as pd
import pytest
import yaml

from clpau.config import BenchmarkParams, EvaluateParams, PretrainParams
from clpau.eval.evaluate import run_evaluate
from clpau.train.pretrain import run_pretrain


@pytest.fixture(scope="module")
def detector(synth_clips, tmp_path_factory):
    """A (tiny) trained encoder and its probe, as `dvc repro` leaves them, and a params file pointing at them."""
    root, out = synth_clips.parent, tmp_path_factory.mktemp("detector")
    pre = PretrainParams(data=[synth_clips], method="tcl", out_dir=out / "models", live_dir=out / "live", max_steps=2,
                         batch_clips=4, clip_len=4)
    run_pretrain(pre, progress=False, log=lambda *_: None)
    bench = BenchmarkParams(clips=root / "labelled_clips", labels_dir=root / "labels" / "labelled")
    ev = EvaluateParams(encoder=out / "models" / "encoder.pt", seeds=1, label_fractions=[1.0], embedding_frames=100,
                        metrics=out / "metrics.json", plots_dir=out / "plots", probe_out=out / "models" / "probe.pt")
    run_evaluate(bench, ev, [synth_clips], progress=False, log=lambda *_: None)
    params = out / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": ev.model_dump(mode="json")}))
    return params


def _predict(params, video, tmp_path, *extra):
    cmd = [sys.executable, "-m", "clpau", "--params", str(params), "predict", str(video), "--out",
           str(tmp_path / "au.csv"), "--quiet", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_predict_writes_one_row_per_decoded_frame(detector, sample_video, tmp_path):
    proc = _predict(detector, sample_video, tmp_path, "--plot", str(tmp_path / "timeline.png"))
    assert proc.returncode == 0, proc.stderr
    assert "trained on the synthetic benchmark only" in proc.stderr
    table = pd.read_csv(tmp_path / "au.csv")
    with av.open(str(sample_video)) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    assert len(table) == decoded == 472 and table["frame"].tolist() == list(range(472))
    aus = [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]
    assert list(table.columns) == (["frame", "timestamp", "face_detected", "confidence"]
                                   + [f"AU{a:02d}_c" for a in aus] + [f"AU{a:02d}_p" for a in aus])
    assert table["timestamp"].is_monotonic_increasing and table["face_detected"].sum() == 472
    assert table["AU12_p"].between(0, 1).all() and set(table["AU12_c"]) <= {0, 1}
    assert ((table["AU12_p"] >= 0.5).astype(int) == table["AU12_c"]).all()
    assert table["confidence"].between(0.5, 1).all()  # every face passed dlib's threshold
    assert (tmp_path / "timeline.png").stat().st_size > 10_000


def test_predict_keeps_frames_without_a_face_as_empty_rows(detector, assets, tmp_path):
    proc = _predict(detector, assets.videos / "no_face.mp4", tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "au.csv")
    assert len(table) > 0 and (table["face_detected"] == 0).all()
    assert table.filter(like="AU").isna().all().all()


def test_predict_reports_an_unreadable_file(detector, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    proc = _predict(detector, bad, tmp_path)
    assert proc.returncode == 3 and "unreadable" in proc.stderr  # an input it cannot use
    assert not (tmp_path / "au.csv").exists()
