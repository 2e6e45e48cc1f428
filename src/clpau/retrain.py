"""Retraining without a person watching: reproduce the pipeline, compare the new evaluation with the promoted
model's, promote only a model that is not worse. Called by `flows/retrain.py`; usable on its own.

Promotion = a copy of `models/encoder.pt`, `models/probe.pt` and `metrics/evaluate.json` in `models/promoted/`
(with `promoted.json`: when, which F1). `clpau predict --encoder models/promoted/encoder.pt --probe
models/promoted/probe.pt` uses it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from .fileio import atomic_dir

PROMOTED = Path("models/promoted")
ARTEFACTS = ("models/encoder.pt", "models/probe.pt", "metrics/evaluate.json")


class Busy(RuntimeError):
    """Another retraining holds this workspace."""


@contextmanager
def workspace_lock(workspace: Path):
    """One retraining at a time per workspace (DVC itself refuses concurrent runs, with a less clear error)."""
    path = Path(workspace) / ".clpau-retrain.lock"
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another retraining is running in {workspace} ({path} is locked)") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def default_targets(workspace: Path) -> list[str]:
    params = yaml.safe_load((Path(workspace) / "params.yaml").read_text()) or {}
    return list((params.get("flows") or {}).get("retrain_targets") or ["pretrain", "evaluate"])


def dvc_repro(workspace: Path, targets: list[str]) -> str:
    """`dvc repro TARGETS` (their upstream stages too) in the workspace; raises with DVC's own message."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"}
    proc = subprocess.run(["dvc", "repro", *targets], cwd=workspace, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro {' '.join(targets)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout + proc.stderr


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def promote_if_better(workspace: Path, tolerance: float = 0.005) -> dict:
    """Promote the workspace's model unless its mean F1 is more than `tolerance` below the promoted one's."""
    ws = Path(workspace)
    new = _read(ws / "metrics/evaluate.json")
    if new is None:
        raise FileNotFoundError(f"{ws / 'metrics/evaluate.json'} is missing: the evaluate stage did not run")
    old = _read(ws / PROMOTED / "evaluate.json")
    if old is not None and new["f1_mean"] < old["f1_mean"] - tolerance:
        return {"promoted": False, "new": new, "old": old,
                "reason": f"mean F1 {new['f1_mean']:.3f} is below the promoted model's {old['f1_mean']:.3f}: "
                          f"kept the promoted model"}
    with atomic_dir(ws / PROMOTED) as tmp:
        for a in ARTEFACTS:
            shutil.copy2(ws / a, tmp / Path(a).name)
        (tmp / "promoted.json").write_text(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                       "f1_mean": new["f1_mean"], "method": new["method"]}) + "\n")
    reason = ("first promoted model" if old is None else
              f"mean F1 {new['f1_mean']:.3f} vs {old['f1_mean']:.3f} promoted before: promoted")
    return {"promoted": True, "new": new, "old": old, "reason": reason}
