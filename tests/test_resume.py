"""Kill `clpau extract` mid-batch with SIGKILL, rerun it: the result equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from media import read_frames, resize, write_video

from clpau.config import ExtractParams
from clpau.video.extract import run_extract


def _batch(folder: Path, sample: Path, single: Path) -> Path:
    folder.mkdir()
    frames = read_frames(sample, 96)
    for i in range(4):  # distinct content: different crops of the sample
        part = [f[:, 40 * i: 40 * i + 560] for f in frames[24 * i: 24 * i + 72]]
        write_video(folder / f"part{i}.mp4", resize(part, 560, 360))
    (folder / "single.mp4").write_bytes(single.read_bytes())
    return folder


def _tables(out: Path):
    v = pd.read_parquet(out / "videos.parquet")
    c = pd.read_parquet(out / "clips.parquet")
    shards = {p.parent.name: np.load(p) for p in sorted(out.glob("frames/*/faces.npy"))}
    return v, c, shards


def test_kill_and_resume_equals_uninterrupted(assets, sample_video, tmp_path):
    folder = _batch(tmp_path / "in", sample_video, assets.videos / "single_face.mp4")
    reference = tmp_path / "ref"
    run_extract([folder], reference, ExtractParams(), workers=1, progress=False)

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "clpau", "extract", str(folder), "--out", str(out), "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("frames/*/video.json"))) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(out.glob("frames/*/video.json")))
    assert 2 <= done_before < 5, "the kill must land mid-batch"
    # nothing that looks finished is left behind
    assert not (out / "videos.parquet").exists() and not (out / "clips.parquet").exists()
    for marker in out.glob("frames/*/video.json"):
        json.loads(marker.read_text())

    resumed = run_extract([folder], out, ExtractParams(), workers=2, progress=False)
    # finished videos were skipped: only the rest was decoded again
    assert resumed.frames < sum(resumed.videos["frames"])
    assert not list(out.rglob("*.tmp"))

    v1, c1, s1 = _tables(reference)
    v2, c2, s2 = _tables(out)
    pd.testing.assert_frame_equal(v1, v2)
    pd.testing.assert_frame_equal(c1, c2)
    assert s1.keys() == s2.keys()
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k])


def test_output_does_not_depend_on_worker_count(sample_video, tmp_path):
    one = run_extract([sample_video], tmp_path / "w1", ExtractParams(), workers=1, progress=False)
    two = run_extract([sample_video], tmp_path / "w2", ExtractParams(), workers=2, progress=False)
    pd.testing.assert_frame_equal(one.clips, two.clips)
    v1, _, s1 = _tables(tmp_path / "w1")
    v2, _, s2 = _tables(tmp_path / "w2")
    pd.testing.assert_frame_equal(v1, v2)
    # byte for byte, so DVC's hashes of an extract output are the same on every machine and rerun
    for name in ("videos.parquet", "clips.parquet"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k])


def test_changed_params_or_code_redo_cached_videos(sample_video, tmp_path, monkeypatch):
    import clpau.video.extract

    run_extract([sample_video], tmp_path, ExtractParams(), workers=2, progress=False)
    again = run_extract([sample_video], tmp_path, ExtractParams(), workers=2, progress=False)
    assert again.frames == 0  # nothing decoded: cached
    with monkeypatch.context() as m:  # the extraction code changed (`dvc repro` reruns a stage of persisted outs)
        m.setattr(clpau.video.extract, "code_digest", lambda: "other code")
        assert run_extract([sample_video], tmp_path, ExtractParams(), workers=2, progress=False).frames == 472
    changed = run_extract([sample_video], tmp_path, ExtractParams(clip_len=8, clip_stride=4), workers=2,
                          progress=False)
    assert changed.frames == 472
    assert (changed.clips["n_frames"] == 8).all()


def test_small_faces_extract_identically_every_time(synth_clips, tmp_path):
    """Faces near the tracking window's native size take the no-resize path into dlib: it must get a contiguous
    copy of the window (a strided view once made results vary from run to run)."""
    videos = sorted((synth_clips.parent / "raw" / "pretrain").glob("*.mp4"))
    runs = [run_extract(videos, tmp_path / f"r{k}", ExtractParams(), workers=2, identity_rule="prefix",
                        progress=False) for k in range(2)]
    pd.testing.assert_frame_equal(runs[0].clips, runs[1].clips)
    for key in runs[0].videos["key"]:
        a = pd.read_parquet(tmp_path / "r0" / "frames" / key / "index.parquet")
        b = pd.read_parquet(tmp_path / "r1" / "frames" / key / "index.parquet")
        pd.testing.assert_frame_equal(a, b)
