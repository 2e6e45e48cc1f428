"""`evaluate`: the linear-probe protocol, the fine-tune protocol and where the figures go."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from clpau.core.params import _Section


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
    finetune_accelerator: str = Field("auto", description="where the fine-tune protocol trains (Fabric's accelerator)")
    finetune_precision: Literal["auto", "bf16-mixed", "16-mixed", "32-true"] = Field(
        "auto", description="auto: as pretraining resolves it (bf16-mixed where native, else 32-true on a CPU)")
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
