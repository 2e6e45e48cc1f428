"""Shared fixtures: the real sample media (fetched once per machine into data/cache) and one extraction of the
main sample video that several tests read."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# each test session gets its own Prefect home (database, settings): nothing leaks between runs or into ~/.prefect
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="clpau-prefect-")

from clpau.config import AssetsParams, ExtractParams  # noqa: E402
from clpau.synth.assets import AssetPaths, fetch_assets  # noqa: E402
from clpau.video.extract import run_extract  # noqa: E402

# `make test` runs pytest-xdist with `--dist loadfile --no-loadscope-reorder`: each test module in one process, so
# a module's fixtures (the DVC repo of test_pipeline.py: a minute) are built once, in the order below. The longest
# modules go first (`--durations` on 2 cores) so that no process starts one near the end while the other idles.
# (`--dist loadgroup` does not group on pytest 9.2: xdist 3.8 renames node ids that pytest no longer reads,
# pytest-dev/pytest-xdist#1386.)
LONGEST_FIRST = ["test_pipeline.py", "test_flows.py", "test_pretrain.py", "test_evaluate.py", "test_extract.py",
                 "test_resume.py"]


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module keeps its own order


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> AssetPaths:
    # the wheel cache is the project's own (data/cache): a second test session downloads nothing
    params = AssetsParams(out_dir=tmp_path_factory.mktemp("external"), cache_dir=ROOT / "data" / "cache")
    return fetch_assets(params, log=lambda *_: None)


@pytest.fixture(scope="session")
def sample_video(assets) -> Path:
    return assets.videos / "WolfgangLanger_Pexels.mp4"


@pytest.fixture(scope="session")
def sample_extraction(assets, sample_video, tmp_path_factory):
    out = tmp_path_factory.mktemp("sample_clips")
    summary = run_extract([sample_video], out, ExtractParams(), workers=2, progress=False)
    return out, summary


@pytest.fixture(scope="session")
def synth_clips(assets, tmp_path_factory):
    """A small synthetic set, rendered and extracted: pretraining corpus of 4 identities x 1 clip x 48 frames in
    the returned folder; the 24 labelled subjects x 1 task x 16 frames in ../labelled_clips (labels in ../labels)."""
    from clpau.config import SynthParams
    from clpau.synth.benchmark import run_synth

    root = tmp_path_factory.mktemp("synth_small")
    params = SynthParams(assets_dir=assets.root, out_dir=root / "raw", labels_dir=root / "labels",
                         pretrain={"identities": 4, "videos_per_identity": 1, "frames": 48},
                         labelled={"tasks": 1, "frames": 16})
    run_synth(params, workers=2, progress=False)
    out = root / "clips"
    run_extract([params.out_dir / "pretrain"], out, ExtractParams(), workers=2, identity_rule="prefix",
                progress=False)
    run_extract([params.out_dir / "labelled"], root / "labelled_clips", ExtractParams(), workers=2,
                identity_rule="prefix", progress=False)
    return out


@pytest.fixture(scope="session")
def synth_store(synth_clips, tmp_path_factory) -> Path:
    """`synth_clips` as a clip store of one chunk per video (48 frames: 4 chunks of 5 clips)."""
    from clpau.data.store import write_store

    out = tmp_path_factory.mktemp("store") / "store"
    write_store([synth_clips], out, chunk_frames=48, progress=False)
    return out


@pytest.fixture(scope="session")
def batches(assets, tmp_path_factory):
    """Real extract outputs for the quality gate, drift and the flows: a training `pool` (24 synthetic people), a
    `good` batch of 8 new people, the same 8 videos darkened (`dark`: a lighting shift) and a `bad` batch (the
    real sample video made very dark, pure noise, faces too small, a corrupt file). Returns {name: (videos dir,
    extract dir)}."""
    import shutil

    import media
    import numpy as np

    from clpau.config import SynthParams
    from clpau.synth.benchmark import run_synth

    root = tmp_path_factory.mktemp("batches")
    params = SynthParams(assets_dir=assets.root, out_dir=root / "raw", labels_dir=root / "labels",
                         pretrain={"identities": 32, "videos_per_identity": 1, "frames": 40},
                         labelled={"tasks": 1, "frames": 16})
    run_synth(params, workers=2, progress=False)
    videos = sorted((params.out_dir / "pretrain").glob("*.mp4"))
    dirs = {name: root / name for name in ("pool", "good", "dark", "bad")}
    for d in dirs.values():
        d.mkdir()
    for v in videos[:24]:
        shutil.copy(v, dirs["pool"])
    for v in videos[24:]:
        shutil.copy(v, dirs["good"])
        frames = media.read_frames(v, 1000)
        media.write_video(dirs["dark"] / v.name, [(f * 0.45).astype(np.uint8) for f in frames], fps=25)
    sample = media.read_frames(assets.videos / "WolfgangLanger_Pexels.mp4", 24)
    media.write_video(dirs["bad"] / "dark_room.mp4", [(f * 0.1).astype(np.uint8) for f in sample])
    rng = np.random.default_rng(0)
    media.write_video(dirs["bad"] / "noise.mp4",
                      [np.clip(rng.normal(120, 30, (360, 640, 3)), 0, 255).astype(np.uint8) for _ in range(24)])
    media.write_video(dirs["bad"] / "tiny.mp4", media.resize(sample, 160, 90))
    (dirs["bad"] / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    out = {}
    for name, d in dirs.items():
        clips = root / f"{name}_clips"
        run_extract([d], clips, ExtractParams(), workers=2, identity_rule="prefix", progress=False)
        out[name] = (d, clips)
    return out


@pytest.fixture(scope="session")
def harness():
    """Prefect's test harness (a temporary server and database), started once for every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def real_videos(assets, tmp_path_factory) -> dict[str, Path]:
    """Real-face videos made from the real sample videos (trims, mirror images, re-encodes: different bytes, real
    faces): `talk` = 12 talking-face videos of 24 frames; `single` = the one-face sample re-encoded, `single_mirrored`
    its mirror image; `interview` = a face in 20 of 47 frames (43 %), then an empty scene; `dark_room` = the talking
    face at 10 % brightness; `truncated` = the first half of the talking-face file's bytes."""
    import media
    import numpy as np

    root = tmp_path_factory.mktemp("real")
    sample = assets.videos / "WolfgangLanger_Pexels.mp4"
    out = {"talk": root / "talk"}
    media.real_face_videos(sample, out["talk"], 12)
    single = media.read_frames(assets.videos / "single_face.mp4", 72)
    out["single"] = media.write_video(root / "single.mp4", single)
    out["single_mirrored"] = media.write_video(root / "holiday.mp4", [f[:, ::-1] for f in single])
    data = sample.read_bytes()
    out["truncated"] = root / "cut_short.mp4"
    out["truncated"].write_bytes(data[: len(data) // 2])  # the sample keeps its index first: 228 of 472 frames remain
    out["interview"] = media.partly_faceless(sample, assets.videos / "no_face.mp4", root / "bob_interview.mp4", 20, 27)
    out["dark_room"] = media.write_video(root / "dark_room.mp4",
                                         [(f * 0.1).astype(np.uint8) for f in media.read_frames(sample, 24)])
    return out
