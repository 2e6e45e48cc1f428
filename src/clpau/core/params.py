"""The base of every params section (unknown keys refused, values frozen), the errors that name a bad key, and the
section every layer reads: `benchmark`, the labelled AU set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

STORE_PREFIXES = ("s3://", "gs://", "azure://", "local:")  # object stores LitData reads (local: a folder as one)


def _data_root(value: Any) -> Any:
    """A folder as a Path; an object-store URL kept as written (Path would fold its `//`)."""
    return value if isinstance(value, str) and value.startswith(STORE_PREFIXES) else Path(value)


DataRoot = Annotated[Path | str, BeforeValidator(_data_root)]


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
