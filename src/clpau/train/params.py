"""`pretrain`: the training loop's section (what to read, how long, where it runs, how it is written)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from clpau.core.params import DataRoot, _Section
from clpau.methods import METHODS
from clpau.methods.cir import CIRParams
from clpau.methods.moco import MoCoParams
from clpau.methods.simclr import SimCLRParams
from clpau.methods.tcl import TCLParams


class ComputeParams(_Section):
    """`pretrain.compute`: where the run computes — device, processes, precision — and where a batch's work runs
    (train/placement.py). None of it changes what is trained but the precision."""

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

    @model_validator(mode="after")
    def _check(self) -> ComputeParams:
        if self.crop_on == "trainer" and self.colour_on == "loader":
            raise ValueError("crop_on: trainer needs colour_on trainer or auto (the colour jitter comes after the crop)")
        if self.decode_on == "trainer" and self.crop_on == "loader":
            raise ValueError("decode_on: trainer needs crop_on trainer or auto (the loader crops decoded frames)")
        return self


class PretrainParams(_Section):
    """What the loop trains (`method`, its data, its budget) and how it is written; where it runs in `compute`; each
    method's own settings in its section (`tcl`, `cir`, `moco`, `simclr`)."""

    # tcl, not clp: cross-identity reconstruction bought nothing measurable for 10-12 % more time (docs/results.md)
    method: Literal[tuple(METHODS)] = Field("tcl", description="the method (clpau.methods.METHODS)")
    data: list[DataRoot] = Field([Path("data/trainset")], description="extract output folders, or clip stores "
                                 "(`clpau store`): a folder, or s3://… / local:… streamed into store_cache")
    store_cache: Path = Field(Path("data/cache/store"), description="where the chunks of a streamed store are kept")
    out_dir: Path = Path("models")
    live_dir: Path | None = Field(Path("dvclive/pretrain"), description="dvclive history; null: none")
    backbone: Literal["resnet_small", "resnet18"] = "resnet_small"
    image_size: int = Field(64, ge=32, le=256)
    clip_len: int = Field(8, ge=2, description="frames per clip (TCL); frame methods use single frames")
    frame_stride: int = Field(4, ge=1, description="frames between a clip's frames: 8 frames 4 apart span 1.12 s")
    frame_jitter: float = Field(0.03, ge=0, le=0.2, description="per-frame shift (share of the crop) on top of the "
                                                                 "clip's augmentation: hides alignment jitter")
    batch_clips: int = Field(16, ge=2, description="clips per step; frame methods take batch_clips*clip_len frames")
    max_steps: int = Field(1000, ge=1)
    lr: float = Field(4e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(20, ge=0)
    ckpt_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    seed: int = 0
    compute: ComputeParams = ComputeParams()
    # each method's own settings (clpau.methods.SECTIONS); a method reads only its own (METHODS[m].sections)
    tcl: TCLParams = TCLParams()
    cir: CIRParams = CIRParams()
    moco: MoCoParams = MoCoParams()
    simclr: SimCLRParams = SimCLRParams()

    @model_validator(mode="after")
    def _check(self) -> PretrainParams:
        if self.method in ("tcl", "clp") and self.tcl.variant == "time_contrast" \
                and not self.tcl.neg_window < self.clip_len:
            raise ValueError(f"tcl.variant time_contrast needs neg_window < clip_len (a clip must hold a negative), "
                             f"got {self.tcl.neg_window} and {self.clip_len}")
        return self
