"""Who is in a video, by face, on real video: copies a user might make of the real sample videos (mirrored, darkened,
re-encoded, cropped, a later part, renamed) are matched to their person and different people are not; the guard
refuses an evaluation subject's copy under another name; the training set counts persons, not file names; a purge
removes a person from the pool."""

from __future__ import annotations

import json
import shutil

import media
import numpy as np
import pandas as pd
import pytest
import yaml

from clpau.config import BenchmarkParams, ExtractParams, TrainsetParams
from clpau.core import faces
from clpau.ops import trainset
from clpau.ops.purge import PurgeError, purge
from clpau.video.extract import run_extract

THRESHOLD = TrainsetParams().face_threshold


@pytest.fixture(scope="module")
def copies(assets, tmp_path_factory):
    """Copies of the talking man's and of the single-face sample's video, and a renamed copy (the same bytes),
    extracted in one run: {stem: descriptor}, and the folder of videos."""
    folder = tmp_path_factory.mktemp("copies")
    media.person_copies(assets.videos / "WolfgangLanger_Pexels.mp4", folder, "wolfgang", n=32)
    media.person_copies(assets.videos / "single_face.mp4", folder, "single", n=32)
    shutil.copy(folder / "single_source.mp4", folder / "renamed_carl.mp4")
    out = tmp_path_factory.mktemp("copies_clips")
    run_extract([folder], out, ExtractParams(), workers=2, progress=False)
    v = pd.read_parquet(out / "videos.parquet")
    assert (v["status"] == "ok").all(), v[["video", "status", "error"]]
    return {n.rsplit("/", 1)[-1][:-4]: np.asarray(d, np.float32) for n, d in zip(v["video"], v["descriptor"],
                                                                                 strict=True)}, folder, v


def test_the_clip_table_holds_each_video_s_face_descriptor(copies):
    _, _, v = copies
    assert all(len(d) == faces.DIM for d in v["descriptor"])
    assert (v["descriptor_frames"] >= 1).all() and (v["descriptor_frames"] <= ExtractParams().descriptor_samples).all()
    assert all(len(o) == 0 for o in v["other_faces"])  # one person in each


def test_copies_of_a_video_are_its_person_and_other_people_are_not(copies):
    d, _, _ = copies
    for person in ("wolfgang", "single"):
        for kind in ("mirrored", "darkened", "reencoded", "cropped", "later"):
            dist = np.linalg.norm(d[f"{person}_{kind}"] - d[f"{person}_source"])
            assert dist < THRESHOLD, (person, kind, dist)
    assert np.linalg.norm(d["renamed_carl"] - d["single_source"]) < 1e-6  # the same bytes, another name
    assert np.linalg.norm(d["wolfgang_source"] - d["single_source"]) > THRESHOLD
    names = sorted(d)
    labels = faces.cluster(faces.as_matrix([d[n] for n in names]), THRESHOLD)
    groups = {}
    for n, label in zip(names, labels, strict=True):
        groups.setdefault(int(label), set()).add(n.split("_")[0].replace("renamed", "single"))
    assert sorted(map(sorted, groups.values())) == [["single"], ["wolfgang"]], groups


def _benchmark(tmp_path, videos: dict, folds: list[list[str]]) -> BenchmarkParams:
    """A labelled benchmark whose videos are real faces: {file name: source video, re-encoded (other bytes)}."""
    src = tmp_path / "bench_videos"
    src.mkdir()
    for name, path in videos.items():
        media.write_video(src / name, media.read_frames(path, 32), fps=20)
    out = tmp_path / "bench_clips"
    run_extract([src], out, ExtractParams(), workers=2, identity_rule="prefix", progress=False)
    (tmp_path / "folds.yaml").write_text(yaml.safe_dump({"dataset": "bp4d", "folds": folds}))
    return BenchmarkParams(dataset="bp4d", clips=out, folds=tmp_path / "folds.yaml")


def test_an_evaluation_subject_under_another_name_is_refused_by_face(copies, tmp_path):
    """F003 is the talking man, F001 the single-face sample (BP4D's naming): every copy of them, whatever its
    name, is refused with the subject and the distance; with the face guard off, names alone catch none."""
    _, folder, v = copies
    bench = _benchmark(tmp_path, {"F003_T1.mp4": folder / "wolfgang_later.mp4",
                                  "F001_T1.mp4": folder / "single_later.mp4"}, [["F001", "F002"], ["F003"]])
    refused = trainset.benchmark_overlap(v, bench, THRESHOLD)
    assert set(refused) == set(v["video"]), sorted(set(v["video"]) - set(refused))
    mirrored = next(n for n in v["video"] if n.endswith("wolfgang_mirrored.mp4"))
    assert "wolfgang_mirrored.mp4 shows the labelled benchmark's evaluation subject F003 (face-descriptor " \
           "distance 0." in refused[mirrored], refused[mirrored]
    assert all(("subject F001" in r) == ("single" in n or "carl" in n) for n, r in refused.items())
    assert trainset.benchmark_overlap(v, bench) == {}  # by name and sha256 alone: nothing


def test_the_face_guard_is_off_where_the_descriptor_does_not_tell_the_subjects_apart(copies, tmp_path):
    """Two subjects who are one person to dlib (the synthetic renders are all alike to it: docs/operations.md):
    the face guard says why it is off and refuses nothing by face."""
    _, folder, v = copies
    bench = _benchmark(tmp_path, {"F003_T1.mp4": folder / "wolfgang_later.mp4",
                                  "F001_T1.mp4": folder / "wolfgang_source.mp4"}, [["F001"], ["F003"]])
    _, names, off = trainset.face_gallery(bench, THRESHOLD)
    assert sorted(names) == ["F001", "F003"]
    assert off.startswith("dlib's descriptor does not tell the benchmark's subjects apart (1 of 1 pairs"), off
    assert trainset.benchmark_overlap(v, bench, THRESHOLD) == {}


def _pool(tmp_path, folder, batches: dict[str, dict[str, str]]):
    """pool/<batch>/{videos,clips,batch.json} of real copies: {batch: {name in the batch: copy's stem}}."""
    pool = tmp_path / "pool"
    for batch, names in batches.items():
        b = pool / batch
        (b / "videos").mkdir(parents=True)
        for name, stem in names.items():
            shutil.copy(folder / f"{stem}.mp4", b / "videos" / name)
        run_extract([b / "videos"], b / "clips", ExtractParams(), workers=2, progress=False)
        (b / "batch.json").write_text(json.dumps({"batch": batch, "videos": sorted(names)}))
    return pool


def test_the_training_set_counts_persons_across_batches_and_names_and_a_purge_removes_one(copies, tmp_path):
    _, folder, _ = copies
    pool = _pool(tmp_path, folder, {"b1": {"ann.mp4": "wolfgang_source", "bea.mp4": "single_source"},
                                    "b2": {"carl.mp4": "wolfgang_mirrored", "dora.mp4": "single_darkened"},
                                    "b3": {"eve.mp4": "wolfgang_cropped"}})
    p = TrainsetParams(base=[], pool=pool, out_dir=tmp_path / "trainset", metrics=tmp_path / "m.json")
    bench = BenchmarkParams(clips=tmp_path / "none", folds=tmp_path / "none.yaml")
    composition = trainset.assemble(p, bench)
    assert composition["total"]["identities"] == 5 and composition["total"]["persons"] == 2, composition
    manifest = pd.read_parquet(p.out_dir / "clips.parquet")
    person = manifest.groupby(manifest["video"].str.rsplit("/", n=1).str[-1])["person"].first()
    assert person["ann.mp4"] == person["carl.mp4"] == person["eve.mp4"] != person["bea.mp4"] == person["dora.mp4"]
    from clpau.data.datasets import ClipDataset

    data = ClipDataset([p.out_dir], clip_len=4, stride=1, augment=False)  # who CIR's "another person" excludes
    assert len(data.identity_index) == 2 and len(set(data.identity)) == 2

    with pytest.raises(PurgeError, match="no video 'b9/x.mp4'"):
        purge(pool, tmp_path / "q", "b9/x.mp4", THRESHOLD, "asked")
    listed = purge(pool, tmp_path / "q", "b2/carl.mp4", THRESHOLD, "withdrew consent", dry_run=True)
    assert listed["videos"] == ["pool/b1/ann.mp4", "pool/b2/carl.mp4", "pool/b3/eve.mp4"]
    assert (pool / "b1" / "videos" / "ann.mp4").exists()  # a dry run removes nothing
    done = purge(pool, tmp_path / "q", "b2/carl.mp4", THRESHOLD, "withdrew consent", by="alice", version=False)
    assert done["videos"] == listed["videos"] and done["batches_removed"] == ["pool/b3"]
    assert not (pool / "b3").exists() and sorted(p.name for p in (pool / "b1" / "videos").iterdir()) == ["bea.mp4"]
    b1 = json.loads((pool / "b1" / "batch.json").read_text())
    assert b1["videos"] == ["bea.mp4"] and b1["purged"][0]["videos"] == ["ann.mp4"]
    assert b1["purged"][0]["by"] == "alice" and b1["purged"][0]["reason"] == "withdrew consent"
    assert "descriptor" not in json.dumps(b1)
    v1 = pd.read_parquet(pool / "b1" / "clips" / "videos.parquet")
    assert len(v1) == 1 and v1["video"].iloc[0].endswith("bea.mp4")
    assert sorted(f.name for f in (pool / "b1" / "clips" / "frames").iterdir()) == [v1["key"].iloc[0]]
    after = trainset.assemble(p, bench)
    assert after["total"]["persons"] == 1 and after["total"]["videos"] == 2, after
