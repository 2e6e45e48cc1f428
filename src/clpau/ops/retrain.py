"""Retraining without a person watching: when the pool holds batches the promoted model was not trained on, run
the pipeline as a named DVC experiment (`dvc exp run -n retrain-<date>`: trainset → pretrain → evaluate), compare
its evaluation with the promoted model's, and promote it only when it is not worse. Called by `flows/retrain.py`;
usable on its own.

Promotion = `models/promoted/` (encoder.pt, probe.pt, evaluate.json, trainset.json, the training set's manifest in
`trainset/` — the drift reference of the next batches — and `lineage.json`: the experiment, the commit it ran on,
the pool's version, the training set's composition, the pretraining params and the figures), versioned with
`dvc add models/promoted` and committed in git together with the experiment's dvc.lock, params and metrics, so
the workspace, git and DVC agree on what is promoted. `clpau predict --encoder models/promoted/encoder.pt --probe
models/promoted/probe.pt` uses it. A rejected experiment stays listed in `dvc exp show`; the workspace goes back to
the promoted state.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import yaml

from clpau.config import Params
from clpau.core.fileio import atomic_dir
from clpau.ops import sync
from clpau.ops.trainset import pool_batches, write_manifest

PROMOTED = Path("models/promoted")
ARTEFACTS = ("models/encoder.pt", "models/probe.pt", "metrics/evaluate.json")
FIGURES = ("f1_mean", "f1_std", "same_subject_nn", "cross_subject_knn_f1", "subject_variance_share")


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


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def lineage(ws: Path) -> dict | None:
    """The promoted model's lineage.json, if a model is promoted."""
    return _read(Path(ws) / PROMOTED / "lineage.json")


def pending(ws: Path, params: Params) -> dict:
    """{run: bool, reason, new_batches, drifted_batches}: run when no model is promoted yet or the pool holds batches
    the promoted model was not trained on (those the ingest flow found drifted are named)."""
    pool = [b.name for b in pool_batches(Path(ws) / params.trainset.pool)]
    promoted = lineage(ws)
    trained = set(promoted["trainset"]["batches"]) if promoted else set()
    new = [b for b in pool if b not in trained]
    if promoted is not None and not new:
        return {"run": False, "new_batches": [], "drifted_batches": [],
                "reason": f"no new accepted data: the promoted model ({promoted['experiment']}) was trained on "
                          f"every batch in the pool ({', '.join(pool) or 'none'}); nothing to retrain"}
    drifted = [b for b in new if (_read(Path(ws) / params.trainset.pool / b / "batch.json") or {}).get("retrain_due")]
    reason = "no promoted model yet" if promoted is None else f"new accepted batches: {', '.join(new)}"
    return {"run": True, "new_batches": new, "drifted_batches": drifted,
            "reason": reason + (f" (drifted from the training set: {', '.join(drifted)})" if drifted else "")}


def experiment_name() -> str:
    return time.strftime("retrain-%Y%m%d-%H%M%S")


def run_experiment(ws: Path, name: str, targets: list[str]) -> str:
    """`dvc exp run -n NAME TARGETS` in the workspace (its results stay there); raises with DVC's own message."""
    return sync.run(Path(ws), "dvc", "exp", "run", "-n", name, *targets).stdout


def changed_files(ws: Path) -> set[str]:
    return set(sync.run(Path(ws), "git", "diff", "--name-only").stdout.split()) if sync.is_git(Path(ws)) else set()


def promote_if_better(ws: Path, params: Params, experiment: str, tolerance: float,
                      changed: set[str] = frozenset()) -> dict:
    """Promote the workspace's model (the experiment's) unless its mean F1 is more than `tolerance` below the
    promoted one's; otherwise put the workspace back (`changed`: files the experiment modified)."""
    ws = Path(ws)
    new = _read(ws / "metrics/evaluate.json")
    if new is None:
        raise FileNotFoundError(f"{ws / 'metrics/evaluate.json'} is missing: the evaluate stage did not run")
    old = _read(ws / PROMOTED / "evaluate.json")
    composition = _read(ws / params.trainset.out_dir / "composition.json") or {"batches": [], "total": {}}
    if old is not None and new["f1_mean"] < old["f1_mean"] - tolerance:
        if changed:
            sync.run(ws, "git", "checkout", "--", *sorted(changed))
            sync.run(ws, "dvc", "checkout", "-q", "-f")
        return {"promoted": False, "new": new, "old": old, "experiment": experiment, "trainset": composition,
                "reason": f"mean F1 {new['f1_mean']:.3f} is below the promoted model's {old['f1_mean']:.3f}: "
                          f"kept the promoted model ({experiment} stays in `dvc exp show`)"}
    pointer = ws / "data" / "pool.dvc"
    record = {"experiment": experiment, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "base_commit": sync.head(ws), "method": new["method"],
              "data": {"pool": (yaml.safe_load(pointer.read_text())["outs"][0]["md5"] if pointer.exists() else None)},
              "trainset": composition,
              "params": {k: v for k, v in yaml.safe_load((ws / "params.yaml").read_text()).items()
                         if k in ("pretrain", "trainset")},
              "figures": {k: new.get(k) for k in FIGURES}}
    with atomic_dir(ws / PROMOTED) as tmp:
        for a in ARTEFACTS:
            shutil.copy2(ws / a, tmp / Path(a).name)
        (tmp / "trainset").mkdir()
        manifest = ws / params.trainset.out_dir
        clips = pd.read_parquet(manifest / "clips.parquet")
        # shard paths relative to tmp/trainset read the same from promoted/trainset: tmp is promoted's sibling
        write_manifest(clips.assign(shard_path=[str(manifest / s) for s in clips["shard"]]), tmp / "trainset")
        (tmp / "lineage.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    reason = ("first promoted model" if old is None else
              f"mean F1 {new['f1_mean']:.3f} vs {old['f1_mean']:.3f} promoted before: promoted")
    commit = None
    if sync.is_git(ws):
        sync.run(ws, "dvc", "add", "-q", str(PROMOTED))
        paths = [p for p in ("dvc.lock", "params.yaml", "metrics", "dvclive", "models/promoted.dvc", "models/.gitignore")
                 if (ws / p).exists()]
        commit = sync.commit(ws, paths, f"promote {experiment}: mean F1 {new['f1_mean']:.3f}, trained on "
                                        f"{composition['total'].get('clips', '?')} clips "
                                        f"({', '.join(composition['batches']) or 'base corpus only'})")
    return {"promoted": True, "new": new, "old": old, "experiment": experiment, "trainset": composition,
            "reason": reason, "commit": commit}
