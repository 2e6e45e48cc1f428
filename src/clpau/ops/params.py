"""The sections of the operations stages and flows: `validate` (the quality gate), `drift`, `trainset`, `flows`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from clpau.core.params import _Section


class ValidateParams(_Section):
    """Thresholds of the quality gate (validate.py); `mostly` = share of clips that must pass a per-clip check."""
    min_video_share: float = Field(0.5, ge=0, le=1, description="share of a batch's videos that must give clips")
    min_face_share: float = Field(0.5, ge=0, le=1, description="share of a usable video's frames with a face")
    min_fps: float = Field(10.0, gt=0)
    max_fps: float = Field(120.0, gt=0)
    mostly: float = Field(0.9, ge=0, le=1)
    min_det_score: float = Field(-0.5, description="dlib HOG score (0 = its own threshold)")
    min_face_size: float = Field(80.0, ge=0, description="face width in px of the original frame")
    min_brightness: float = Field(40.0, ge=0, le=255)
    max_brightness: float = Field(220.0, ge=0, le=255)
    min_sharpness: float = Field(50.0, ge=0, description="variance of the Laplacian of the aligned crop")
    max_landmark_jitter: float = Field(15.0, gt=0)
    min_clip_frames: int = Field(8, ge=2)


class DriftParams(_Section):
    """Drift of a new batch against the training pool (drift.py)."""
    features: list[str] = ["det_score", "face_size", "brightness", "sharpness", "landmark_jitter"]
    embedding_components: int = Field(8, ge=0, description="PCA components of encoder embeddings tested (0 = off)")
    embedding_frames: int = Field(1000, ge=50, description="frames sampled per side for the embeddings")
    encoder: Path = Path("models/encoder.pt")
    threshold: float = Field(0.3, gt=0, le=1, description="share of drifted columns that flags the batch")
    stattest_threshold: float = Field(0.01, gt=0, lt=1, description="p-value (or distance) per column")
    feature_threshold: float = Field(0.001, ge=0, lt=1, description="a QC feature (drift.features) whose p-value is "
                                     "below this flags the batch on its own (0 = only the share of columns)")
    seed: int = 0
    min_reference_videos: int = Field(10, ge=2, description="a smaller training set is no reference: drift is then "
                                                             "not judged (said so), the batch is not held for it")
    action: Literal["retrain", "hold"] = Field(
        "retrain", description="what a drifted batch's videos that passed the quality gate get: `retrain` = accepted "
        "and a retrain requested (new people, cameras, rooms are what retraining is for); `hold` = kept in "
        "quarantine for a person to release (`clpau ingest release`)")


class TrainsetParams(_Section):
    """The pretraining set: the base corpus plus every batch accepted into the pool (trainset.py)."""
    base: list[Path] = [Path("data/clips/synth_pretrain")]
    pool: Path = Path("data/pool")
    out_dir: Path = Path("data/trainset")
    metrics: Path = Path("metrics/trainset.json")
    face_threshold: float = Field(0.65, gt=0.0, lt=2.0, description="dlib face-descriptor distance (of two videos' "
                                  "medians) below which they show one person: the pool's persons and the guard "
                                  "that keeps evaluation subjects out (docs/operations.md, \"Who is in a video\")")
    names_are_persons: list[Path] = Field([Path("data/clips/synth_pretrain")], description="sources (base "
                                          "entries) whose video names are their persons, as a rendered or labelled "
                                          "corpus's are; every other source's persons are found by face")


class FlowsParams(_Section):
    """Prefect flows (flows/): where new videos arrive, where accepted ones go, how tasks run."""
    inbox: Path = Path("data/inbox")
    quarantine: Path = Path("data/quarantine")
    batches: Path = Path("data/batches")
    reference: Path = Field(Path("models/promoted/trainset"), description="what drift is measured against: the "
                            "promoted model's training set (trainset.out_dir until a model is promoted)")
    task_runner: Literal["thread", "dask"] = "thread"
    dask_address: str | None = Field(None, description="scheduler address; None = a local cluster")
    retries: int = Field(2, ge=0)
    retrain_targets: list[str] = ["pretrain", "evaluate"]
    git_remote: str | None = Field(None, description="git remote the flows pull from and push to (two machines); "
                                                      "None: git is not synced, only the DVC remote")
    promote_tolerance: float = Field(0.005, ge=0.0, description="a retrain is promoted unless its mean F1 is more "
                                                                 "than this below the promoted model's")
    retrain_deployment: str | None = Field(
        "retrain/retrain-weekly", description="the deployment an accepted drifted batch starts a run of "
        "(drift.action: retrain); None, or none registered: the next scheduled retrain trains on it")
