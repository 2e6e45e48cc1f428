"""The synthetic benchmark: labels mean what they say, resting faces are not AUs, data are deterministic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import yaml

from clpau.config import SynthParams
from clpau.synth.benchmark import (
    BP4D_AUS,
    dynamics,
    occurrence,
    plan,
    read_folds,
    render_video,
    run_synth,
    video_paths,
)
from clpau.synth.render import AU_INDEX, Identity, MeshModel, Pose, Renderer
from clpau.video.detect import FaceModels, detect, landmarks
from clpau.video.extract import ExtractParams, run_extract


@pytest.fixture(scope="module")
def model(assets):
    return MeshModel(assets.au_to_mesh, assets.tessellation)


@pytest.fixture(scope="module")
def dlib_models():
    return FaceModels()


def _au(**kw) -> np.ndarray:
    a = np.zeros(20)
    for k, v in kw.items():
        a[AU_INDEX[k]] = v
    return a


def _dlib_points(models, img: np.ndarray) -> np.ndarray:
    gray = np.ascontiguousarray(img.mean(2).astype(np.uint8))
    dets = detect(models, gray, 1.0, 0.0)
    assert dets, "dlib finds no face in the rendered frame"
    return landmarks(models, gray, max(dets, key=lambda d: d[1])[0])


# one identity without a resting offset, so "neutral" is the person's true neutral
@pytest.fixture(scope="module")
def neutral_renderer(model):
    ident = dataclasses.replace(Identity.sample(7), rest=np.zeros(20))
    return Renderer(model, ident, size=192)


@pytest.mark.parametrize("au", ["AU12", "AU01", "AU43", "AU26"])
def test_single_au_changes_the_rendered_face_as_facs_says(neutral_renderer, dlib_models, au):
    """Measured with dlib's landmarks on the rendered images, not only on the mesh."""
    r = neutral_renderer
    neutral = _dlib_points(dlib_models, r.render(_au(), Pose()))
    active = _dlib_points(dlib_models, r.render(_au(**{au: 1.5}), Pose()))
    mesh0, mesh1 = r.keypoints(_au()), r.keypoints(_au(**{au: 1.5}))
    if au == "AU12":  # lip corner puller: corners up (smaller y) and apart
        eyes = lambda p: p[36:48, 1].mean()  # noqa: E731
        assert active[[48, 54], 1].mean() - eyes(active) < neutral[[48, 54], 1].mean() - eyes(neutral) - 2
        assert active[54, 0] - active[48, 0] > neutral[54, 0] - neutral[48, 0] + 3
        assert mesh1["mouth_l"][0] - mesh1["mouth_r"][0] > mesh0["mouth_l"][0] - mesh0["mouth_r"][0]
    elif au == "AU01":  # inner brow raiser: the inner ends of the brows move up
        # dlib's brow points do not follow drawn brows reliably, so measure the brow pixels themselves
        def inner_brow_y(au_vec):
            img = r.render(au_vec, Pose()).astype(int)
            mask = np.abs(img - r.id.brow.astype(int)).max(2) <= 4
            k = r.keypoints(_au())
            ys, xs = np.nonzero(mask)
            near = (np.abs(xs - k["inner_brow_r"][0]) < 5) | (np.abs(xs - k["inner_brow_l"][0]) < 5)
            return ys[near].mean()
        assert inner_brow_y(_au(AU01=1.5)) < inner_brow_y(_au()) - 1.5
        assert mesh1["inner_brow_r"][1] < mesh0["inner_brow_r"][1] - 2
    elif au == "AU43":  # eyes closed: the lids meet
        gap = lambda p: (p[[40, 41, 46, 47], 1].mean() - p[[37, 38, 43, 44], 1].mean())  # noqa: E731
        assert gap(active) < 0.5 * gap(neutral)
        assert mesh1["lid_bottom_r"][1] - mesh1["lid_top_r"][1] <= 0.5
    else:  # AU26 jaw drop: chin down, lips apart
        assert active[8, 1] > neutral[8, 1] + 3
        assert mesh1["lip_bottom"][1] - mesh1["lip_top"][1] > mesh0["lip_bottom"][1] - mesh0["lip_top"][1] + 3


def test_resting_face_moves_geometry_but_sets_no_label(model, assets, tmp_path):
    params = SynthParams(assets_dir=assets.root, out_dir=tmp_path / "raw", labels_dir=tmp_path / "labels")
    spec = next(s for s in plan(params) if s.population == "labelled"
                and Identity.sample(s.identity_seed).rest[AU_INDEX["AU12"]] > 0.3)
    ident = Identity.sample(spec.identity_seed)
    plain = dataclasses.replace(ident, rest=np.zeros(20))
    with_rest = Renderer(model, ident).keypoints(_au())
    without = Renderer(model, plain).keypoints(_au())
    moved = max(np.linalg.norm(with_rest[k] - without[k]) for k in with_rest)
    assert moved > 1.0  # px: the resting offset is visible
    render_video(dataclasses.replace(spec, frames=20), params)
    video, truth, labels_csv = video_paths(params, spec)
    labels = pd.read_csv(labels_csv)
    gt = np.load(truth)
    # labels come from the AU intensities relative to the person's neutral: the offset never enters them
    np.testing.assert_array_equal(labels[[str(a) for a in BP4D_AUS]].to_numpy(), occurrence(gt["au"], 1.0))
    assert np.allclose(gt["rest"], ident.rest)
    neutral_frames = gt["au"][:, AU_INDEX["AU12"]] < 1.0
    assert (labels["12"][neutral_frames] == 0).all()


def test_label_file_layout(assets, tmp_path):
    params = SynthParams(assets_dir=assets.root, out_dir=tmp_path / "raw", labels_dir=tmp_path / "labels")
    spec = dataclasses.replace(plan(params)[-1], frames=24)
    render_video(spec, params)
    _, _, labels_csv = video_paths(params, spec)
    header = labels_csv.read_text().splitlines()[0]
    assert header == "frame," + ",".join(str(a) for a in BP4D_AUS)
    labels = pd.read_csv(labels_csv)
    assert labels["frame"].tolist() == list(range(24))
    assert set(np.unique(labels.drop(columns="frame").to_numpy())) <= {0, 1}


def test_base_rates_and_cooccurrence_are_realistic():
    """Over the whole labelled plan (dynamics only, no rendering): every AU occurs, some are rare, and the
    FACS co-occurrences show up."""
    params = SynthParams()
    specs = [s for s in plan(params) if s.population == "labelled"]
    au = np.concatenate([dynamics(s, params.fps)[0] for s in specs])
    labels = occurrence(au, params.occurrence_threshold)
    rates = dict(zip(BP4D_AUS, labels.mean(0), strict=True))
    assert all(0.02 < r < 0.7 for r in rates.values()), rates
    assert min(rates.values()) < 0.15 < max(rates.values())  # uneven base rates, as in BP4D
    p = lambda a: labels[:, BP4D_AUS.index(a)].astype(bool)  # noqa: E731
    assert (p(6) & p(12)).mean() > 2 * p(6).mean() * p(12).mean()
    assert (p(23) & p(24)).mean() > 2 * p(23).mean() * p(24).mean()
    assert (p(1) & p(2)).mean() > 2 * p(1).mean() * p(2).mean()


def test_populations_are_disjoint_and_deterministic():
    params = SynthParams()
    specs = plan(params)
    assert specs == plan(params)
    pre = {s.identity_seed for s in specs if s.population == "pretrain"}
    lab = {s.identity_seed for s in specs if s.population == "labelled"}
    assert pre and lab and not pre & lab
    a1, p1 = dynamics(specs[5], params.fps)
    a2, p2 = dynamics(specs[5], params.fps)
    np.testing.assert_array_equal(a1, a2)
    other = plan(params.model_copy(update={"seed": 1}))
    assert [s.seed for s in other] != [s.seed for s in specs]


def test_committed_folds_are_subject_exclusive(tmp_path):
    folds = read_folds(SynthParams().folds)
    assert len(folds) == 3 and sum(len(f) for f in folds) >= 24
    bad = tmp_path / "f.yaml"
    bad.write_text(yaml.safe_dump({"folds": [["S001", "S002"], ["S002"]]}))
    with pytest.raises(ValueError, match="more than one fold"):
        read_folds(bad)


def test_rendered_videos_go_through_extract(assets, tmp_path):
    """A small slice of both populations, through the real extraction: faces are found and labels join."""
    params = SynthParams(assets_dir=assets.root, out_dir=tmp_path / "raw", labels_dir=tmp_path / "labels",
                         pretrain={"identities": 3, "videos_per_identity": 1, "frames": 40},
                         labelled={"tasks": 1, "frames": 40})
    summary = run_synth(params, workers=2, progress=False)
    assert summary["frames_rendered"] == 3 * 40 + 24 * 40
    out = run_extract([params.out_dir / "labelled"], tmp_path / "clips", ExtractParams(), workers=2,
                      identity_rule="prefix", progress=False)
    v = out.videos
    assert v["face_frames"].sum() / v["frames"].sum() >= 0.95
    assert set(out.clips["identity"]) <= {s for f in read_folds(params.folds) for s in f}
    row = v.iloc[0]
    index = pd.read_parquet(tmp_path / "clips" / "frames" / row["key"] / "index.parquet")
    labels = pd.read_csv(params.labels_dir / "labelled" / (row["video"].rsplit("/", 1)[-1][:-4] + ".csv"))
    joined = index.merge(labels, on="frame")
    assert len(joined) == len(index) == 40


def test_rendering_is_byte_reproducible_across_processes(assets, tmp_path):
    """Same seed -> the same bytes, whichever worker renders what (DVC caches by content)."""
    digests = []
    for run in range(2):
        params = SynthParams(assets_dir=assets.root, out_dir=tmp_path / f"r{run}" / "raw",
                             labels_dir=tmp_path / f"r{run}" / "labels",
                             pretrain={"identities": 3, "videos_per_identity": 1, "frames": 20},
                             labelled={"tasks": 1, "frames": 20})
        run_synth(params, workers=2, progress=False)
        digests.append({p.relative_to(params.out_dir): p.read_bytes() for p in sorted(params.out_dir.rglob("*.mp4"))})
    assert digests[0].keys() == digests[1].keys() and len(digests[0]) == 27
    assert all(digests[0][k] == digests[1][k] for k in digests[0])


def test_eye_masks_on_their_box_give_the_pixels_of_the_whole_canvas(model, monkeypatch):
    """The renderer draws sclera, iris and pupil masks on the eye's bounding box only (2x the frames/s): for random
    expressions and poses, eyes open and closed, every pixel equals the whole-canvas rendering's."""
    import clpau.synth.render as render

    rng = np.random.default_rng(3)
    cases = [(Identity.sample(seed), np.clip(rng.normal(0.3, 0.9, 20), 0, 3),
              Pose(pitch=rng.normal(0, 8), yaw=rng.normal(0, 15), roll=rng.normal(0, 6), dx=rng.normal(0, 0.05),
                   dy=rng.normal(0, 0.05), scale=rng.uniform(0.85, 1.1))) for seed in range(6) for _ in range(10)]
    boxed = [Renderer(model, ident, size=192).render(au, pose) for ident, au, pose in cases]
    monkeypatch.setattr(render, "EYE_BOX", False)
    whole = [Renderer(model, ident, size=192).render(au, pose) for ident, au, pose in cases]
    assert all(np.array_equal(a, b) for a, b in zip(boxed, whole, strict=True))
    assert len({a.tobytes() for a in boxed}) == len(cases)  # the cases are 60 different frames


def test_synth_preview_draws_each_subject_making_each_au_example(assets, tmp_path):
    from PIL import Image

    from clpau.cli import main
    from clpau.synth.benchmark import PREVIEW_COLUMNS

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"synth": {"assets_dir": str(assets.root), "size": 96}}))
    out = tmp_path / "sheet" / "preview.png"
    assert main(["--params", str(params), "synth", "--preview", "--preview-out", str(out)]) == 0
    sheet = np.asarray(Image.open(out).convert("RGB")).astype(int)
    cols = len(PREVIEW_COLUMNS)
    assert sheet.shape == (18 + 6 * 96, cols * 96, 3)  # a title row, then 6 subjects x the AU examples
    cells = sheet[18:].reshape(6, 96, cols, 96, 3).transpose(0, 2, 1, 3, 4)  # (subject, column, y, x, rgb)
    # each AU example changes the first subject's face against the same face at rest in the column's head pose
    from clpau.synth.benchmark import _model, _seed, read_folds

    p = SynthParams(assets_dir=assets.root, size=96)
    first = read_folds(p.folds)[0][0]
    renderer = Renderer(_model(p), Identity.sample(_seed(p.seed, "labelled", first)), size=96)
    at_rest = np.stack([renderer.render(np.zeros(20), Pose(yaw=(c - 3.5) * 2.5)) for c in range(cols)]).astype(int)
    moved = np.abs(cells[0] - at_rest).mean(axis=(1, 2, 3))
    assert moved[0] == 0 and (moved[1:] > 2.0).all(), moved
    assert np.abs(cells[1:, 0] - cells[:1, 0]).mean(axis=(1, 2, 3)).min() > 2.0
    assert not list(out.parent.glob("*.tmp*"))  # written whole or not at all
