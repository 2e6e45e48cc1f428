"""Typed configuration: `params.yaml`, one section per DVC stage, validated at load.

Every section is a pydantic model with ``extra="forbid"``, so a misspelt key or a bad value stops the run with a
message that names it (``params.yaml: extract.clip_len: Input should be greater than 1``) instead of being ignored.
Each layer of the package owns the sections of its stages (`video/params.py`: extract, `train/params.py`: pretrain,
…; docs/architecture.md); this module puts them together into the file's model and re-exports them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from clpau.core.params import STANDARD_AUS, STORE_PREFIXES, BenchmarkParams, ConfigError, DataRoot, _Section
from clpau.data.params import StoreParams
from clpau.eval.params import EvaluateParams
from clpau.ops.params import DriftParams, FlowsParams, TrainsetParams, ValidateParams
from clpau.synth.params import AssetsParams, SynthParams
from clpau.train.params import PretrainParams
from clpau.video.params import ExtractParams

__all__ = ["DEFAULT_PARAMS", "STANDARD_AUS", "STORE_PREFIXES", "AssetsParams", "BenchmarkParams", "ConfigError",
           "DataRoot", "DriftParams", "EvaluateParams", "ExtractParams", "FlowsParams", "Params", "PretrainParams",
           "StoreParams", "SynthParams", "TrainsetParams", "ValidateParams", "format_error", "load_params", "parse_params"]

DEFAULT_PARAMS = Path("params.yaml")


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


def format_error(source: str, err: ValidationError) -> str:
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
        raise ConfigError(format_error(source, err)) from None


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
