"""Extraction on the real sample videos and on generated bad inputs (the contract between stages: docs/data.md)."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
from media import make_bad_inputs, read_frames, write_video
from PIL import Image

from clpau.cli import main
from clpau.config import ExtractParams, TrainsetParams
from clpau.core import faces
from clpau.video.detect import FaceModels, Template, detect, eye_centres, landmarks
from clpau.video.extract import SUCCESS, run_extract

VIDEO_COLUMNS = {"video", "status", "error", "frames", "face_frames", "fps", "width", "height", "sha256"}
CLIP_COLUMNS = {"clip_id", "video", "identity", "start_frame", "n_frames", "det_score", "face_size", "brightness",
                "sharpness", "landmark_jitter", "shard", "start_row"}


def test_sample_video_decodes_all_frames_with_a_face(sample_extraction):
    out, summary = sample_extraction
    v = pd.read_parquet(out / "videos.parquet")
    assert set(v.columns) >= VIDEO_COLUMNS
    row = v.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["frames"] == 472
    assert row["face_frames"] / row["frames"] >= 0.95
    index = pd.read_parquet(out / "frames" / row["key"] / "index.parquet")
    assert len(index) == 472 and index["frame"].tolist() == list(range(472))
    assert np.all(np.diff(index["timestamp"]) > 0)
    assert index["timestamp"].iloc[-1] == pytest.approx(471 * 1001 / 24000, abs=1e-6)


def test_clips_follow_the_contract(sample_extraction):
    out, _ = sample_extraction
    clips = pd.read_parquet(out / "clips.parquet")
    assert set(clips.columns) >= CLIP_COLUMNS
    p = ExtractParams()
    assert len(clips) > 0 and (clips["n_frames"] == p.clip_len).all()
    for _, c in clips.iterrows():
        shard = np.load(out / c["shard"], mmap_mode="r")
        assert shard.dtype == np.uint8 and shard.shape[1:] == (p.crop_size, p.crop_size, 3)
        index = pd.read_parquet(out / "frames" / c["video_key"] / "index.parquet")
        frames = index.iloc[c["start_frame"]: c["start_frame"] + c["n_frames"]]
        # consecutive decoded frames, each with a face, stored in consecutive shard rows
        assert frames["face"].all()
        assert frames["row"].tolist() == list(range(c["start_row"], c["start_row"] + c["n_frames"]))
        assert c["start_row"] + c["n_frames"] <= len(shard)
    assert clips["clip_id"].is_unique


def test_aligned_eye_centres_are_on_the_template(sample_extraction):
    """Re-find the landmarks on the crops themselves: the eyes must sit on the template points."""
    out, _ = sample_extraction
    key = pd.read_parquet(out / "videos.parquet").iloc[0]["key"]
    crops = np.load(out / "frames" / key / "faces.npy", mmap_mode="r")
    template = Template.from_params(ExtractParams())
    models = FaceModels()
    errors = []
    for i in range(0, len(crops), 12):
        big = np.asarray(Image.fromarray(crops[i]).resize((2 * crops.shape[1],) * 2, Image.BICUBIC))
        gray = np.asarray(Image.fromarray(big).convert("L"))
        dets = detect(models, gray, 1.0, 0.0)
        assert dets, f"no face found again in crop {i}"
        box = max(dets, key=lambda d: d[1])[0]
        eyes = (eye_centres(landmarks(models, gray, box)) + 0.5) / 2 - 0.5  # back to crop pixels
        errors.append(np.linalg.norm(eyes - template.eyes, axis=1).max())
    errors = np.array(errors)
    assert len(errors) >= 35
    print(f"eye-centre error over {len(errors)} crops: median {np.median(errors):.2f} px, "
          f"95th percentile {np.percentile(errors, 95):.2f} px, max {errors.max():.2f} px")
    assert np.median(errors) < 1.5, errors
    assert np.all(errors < 2.0), errors


def test_no_face_sample_video(assets, tmp_path):
    s = run_extract([assets.videos / "no_face.mp4"], tmp_path, ExtractParams(), workers=1, progress=False)
    assert s.videos.iloc[0]["status"] == "no_face"
    assert s.videos.iloc[0]["face_frames"] == 0
    assert len(s.clips) == 0


@pytest.fixture(scope="module")
def bad_batch(assets, sample_video, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_inputs")
    kinds = make_bad_inputs(folder, sample_video, assets.videos / "single_face.mp4", assets.multi_face_image)
    out = tmp_path_factory.mktemp("bad_out")
    code = main(["extract", str(folder), "--out", str(out), "--workers", "2", "--quiet"])
    return kinds, out, code


KINDS = ["zero-byte", "not-a-video", "truncated", "audio-only", "no-face", "several-faces", "tiny-faces",
         "huge-resolution", "rotated", "odd-name"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_gets_its_status(bad_batch, kind):
    kinds, out, code = bad_batch
    path, expected = kinds[kind]
    v = pd.read_parquet(out / "videos.parquet")
    assert len(v) == len(kinds)  # one row per input, nothing lost
    row = v[v["video"].map(lambda s: s.endswith(path.name))]
    assert len(row) == 1, path.name
    row = row.iloc[0]
    assert row["status"] == expected, row["error"]
    if expected not in SUCCESS:
        assert row["error"], "a failed input must say why"
    assert code == 0  # some inputs succeeded


def test_bad_input_details(bad_batch):
    kinds, out, _ = bad_batch
    v = pd.read_parquet(out / "videos.parquet").set_index("video")
    by_kind = {k: v.loc[[i for i in v.index if i.endswith(p.name)][0]] for k, (p, _) in kinds.items()}
    assert by_kind["rotated"]["rotation"] == 90 and by_kind["rotated"]["face_frames"] >= 22
    assert "downscaled from 3840x2160" in by_kind["huge-resolution"]["error"]
    assert by_kind["huge-resolution"]["face_frames"] >= 22
    assert by_kind["several-faces"]["max_faces"] >= 2 and by_kind["several-faces"]["face_frames"] >= 20
    # who is in them: one descriptor for each person (the group photo's others apart from the followed face and
    # from each other), none beside the followed face where there is one face
    group = by_kind["several-faces"]
    people = [np.asarray(group["descriptor"])] + [np.asarray(o) for o in group["other_faces"]]
    assert 3 <= len(people) <= group["max_faces"] and len(people[0]) == 128, len(people)  # 3 measured
    apart = faces.distances(np.stack(people), np.stack(people))[np.triu_indices(len(people), 1)]
    assert apart.min() > TrainsetParams().face_threshold, apart
    for kind in ("rotated", "huge-resolution", "odd-name"):
        assert len(by_kind[kind]["descriptor"]) == 128 and len(by_kind[kind]["other_faces"]) == 0, kind
    assert by_kind["no-face"]["descriptor"] is None and by_kind["no-face"]["descriptor_frames"] == 0
    assert 200 <= by_kind["truncated"]["frames"] < 472
    assert "empty" in by_kind["zero-byte"]["error"]
    assert "audio" in by_kind["audio-only"]["error"]
    assert "min_face_px" in by_kind["tiny-faces"]["error"]
    clips = pd.read_parquet(out / "clips.parquet")
    assert set(clips["video"].map(lambda s: s.rsplit("/", 1)[-1])) >= {"group.mp4", "huge.mp4", "rotated.mp4"}
    # the clips of the group video all follow one person: one face size, and inside each clip no landmark jumps (a
    # switch to the other face moves every landmark by a face's width); frame by frame: the test below
    group = clips[clips["video"].str.endswith("group.mp4")]
    assert len(group) >= 2 and group["face_size"].std() < 0.1 * group["face_size"].mean()
    assert (group["landmark_jitter"] < 0.1 * group["face_size"]).all()
    assert group["start_frame"].is_monotonic_increasing and group["start_frame"].is_unique


def test_several_faces_follow_the_largest(bad_batch):
    kinds, out, _ = bad_batch
    v = pd.read_parquet(out / "videos.parquet")
    key = v[v["video"].str.endswith("group.mp4")].iloc[0]["key"]
    index = pd.read_parquet(out / "frames" / key / "index.parquet")
    width = (index["box_x1"] - index["box_x0"]).dropna()
    cx = ((index["box_x0"] + index["box_x1"]) / 2).dropna()
    assert width.std() < 0.1 * width.mean()  # one face, not a different person now and then
    assert np.abs(np.diff(cx)).max() < 0.25 * width.mean()


def test_all_inputs_bad_exits_nonzero(tmp_path, capsys):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "b.mp4").write_text("not a video")
    code = main(["extract", str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"), "--out", str(tmp_path / "o"),
                 "--quiet"])
    assert code == 3  # inputs it cannot use
    err = capsys.readouterr()
    assert "no input produced face clips" in err.err
    assert "empty_file" in err.out and "unreadable" in err.out
    assert len(pd.read_parquet(tmp_path / "o" / "videos.parquet")) == 2


def test_missing_input_is_a_row(tmp_path, sample_video):
    s = run_extract([tmp_path / "nope.mp4"], tmp_path / "o", ExtractParams(), workers=1, progress=False)
    assert s.videos.iloc[0]["status"] == "not_found"


def test_variable_frame_rate_is_frame_accurate(sample_video, tmp_path):
    frames = read_frames(sample_video, 40)
    rng = np.random.default_rng(1)
    pts = np.cumsum(rng.choice([20, 33, 41, 67, 100], size=40)).tolist()
    path = write_video(tmp_path / "vfr.mp4", frames, pts_ms=pts)
    s = run_extract([path], tmp_path / "o", ExtractParams(), workers=1, progress=False)
    row = s.videos.iloc[0]
    assert row["frames"] == 40
    index = pd.read_parquet(tmp_path / "o" / "frames" / row["key"] / "index.parquet")
    np.testing.assert_allclose(index["timestamp"], (np.array(pts) - pts[0]) / 1000, atol=1e-3)


def test_crops_do_not_depend_on_the_cpus_blas_kernel_or_simd(sample_video, tmp_path):
    """The alignment's geometry runs without BLAS and SIMD maths: the sample video's crops are the same bytes with
    OpenBLAS's Core2 kernel and NumPy held to its baseline SIMD as with this CPU's own (np.linalg.inv changed
    some crops between kernels)."""
    import os
    import subprocess
    import sys

    script = ("import hashlib, sys, numpy as np\n"
              "from clpau.video.chunk import ChunkTask, process_chunk\n"
              "from clpau.config import ExtractParams\n"
              "res = process_chunk(ChunkTask(0, 0, sys.argv[1], None, None, sys.argv[2], ExtractParams()))\n"
              "assert res.failure is None, res.failure\n"
              "print(res.n_faces, hashlib.sha256(np.load(sys.argv[2]).tobytes() + res.affine.tobytes()).hexdigest())\n")
    low = {"OPENBLAS_CORETYPE": "Core2", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR X86_V3"}
    outs = []
    for i, extra in enumerate(({}, low)):
        env = {k: v for k, v in os.environ.items() if k not in low} | extra
        proc = subprocess.run([sys.executable, "-c", script, str(sample_video), str(tmp_path / f"{i}.npy")],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout.split())
    assert int(outs[0][0]) >= 400 and outs[0] == outs[1]


def test_a_rerun_drops_what_its_inputs_no_longer_hold(synth_clips, tmp_path):
    # the stage's output persists between runs (DVC persist): after the inputs change it must hold exactly what a
    # fresh extraction of the new inputs holds, byte for byte, and no shard of a video that is gone
    videos = sorted((synth_clips.parent / "raw" / "pretrain").glob("*.mp4"))
    assert len(videos) >= 3
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for v in videos:
        shutil.copy(v, inputs / v.name)
    kept = tmp_path / "kept"
    first = run_extract([inputs], kept, ExtractParams(), workers=2, identity_rule="prefix", progress=False)
    gone = videos[0].name
    (inputs / gone).unlink()
    run_extract([inputs], kept, ExtractParams(), workers=2, identity_rule="prefix", progress=False)
    fresh = tmp_path / "fresh"
    run_extract([inputs], fresh, ExtractParams(), workers=2, identity_rule="prefix", progress=False)

    def tree(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    gone_key = hashlib.sha256(videos[0].read_bytes()).hexdigest()[:16]
    assert gone_key in set(first.videos["key"])
    assert not (kept / "frames" / gone_key).exists()
    assert tree(kept) == tree(fresh)
