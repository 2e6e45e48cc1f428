"""Prefect flow: retrain — pull (git + DVC remotes, where set), stop when the pool holds no batch the promoted model
was not trained on, else run the pipeline as the DVC experiment `retrain-<date>` (Lightning Fabric picks the
worker's accelerator: `pretrain.compute.accelerator: auto`; `pretrain.compute.devices`/`num_nodes` for a multi-GPU worker), promote
it only if it is not worse than the promoted model (lineage, `dvc add`, git commit), and push.

A thin wrapper over `clpau.retrain` and `clpau.sync`; one run at a time per workspace (a lock file, and
`concurrency_limit: 1` on the `retrain-weekly` deployment, which runs on the `gpu` work pool). Run once with
`python flows/retrain.py [--workspace .]`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from clpau.config import load_params
from clpau.ops import retrain, sync


@task(name="pull")
def pull(workspace: Path) -> list[str]:
    return sync.pull(workspace, load_params(workspace / "params.yaml").flows.git_remote)


@task(name="dvc-exp-run")
def experiment(workspace: Path, name: str, targets: list[str]) -> str:
    return retrain.run_experiment(workspace, name, targets)


@task(name="promote")
def promote(workspace: Path, name: str, tolerance: float, changed: set[str]) -> dict:
    return retrain.promote_if_better(workspace, load_params(workspace / "params.yaml"), name, tolerance, changed)


@task(name="push")
def push(workspace: Path, remote: str | None, name: str) -> list[str]:
    return sync.push(workspace, remote, experiment=name)


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _publish(result: dict) -> None:
    new, old, t = result["new"], result["old"], result["trainset"]
    total = t.get("total", {})
    lines = [f"# Retrain {result['experiment']}: {'promoted' if result['promoted'] else '**not promoted**'}", "",
             f"- trained on: {total.get('videos')} videos, {total.get('clips')} clips, "
             f"{60 * (total.get('hours') or 0):.1f} min of face video, {total.get('identities')} identities; "
             f"accepted batches: {', '.join(t.get('batches') or []) or 'none'}",
             f"- new model: {new['method']}, mean F1 {_fmt(new['f1_mean'])} ± {_fmt(new.get('f1_std'))}; "
             f"same-subject NN {_fmt(new.get('same_subject_nn'))}, cross-subject kNN F1 "
             f"{_fmt(new.get('cross_subject_knn_f1'))}, subject variance {_fmt(new.get('subject_variance_share'))}"]
    if old:
        lines.append(f"- promoted before: mean F1 {_fmt(old['f1_mean'])}")
    lines.append(f"- {result['reason']}")
    if result.get("commit"):
        lines.append(f"- promotion committed: {result['commit'][:10]}")
    create_markdown_artifact("\n".join(lines), key="retrain-summary")
    create_table_artifact([{"source": name, **stats} for name, stats in (t.get("sources") or {}).items()],
                          key="retrain-trainset", description="what the new model was trained on")
    create_table_artifact([{"AU": au, "new F1": f1, "promoted F1": (old or {}).get("f1", {}).get(au)}
                           for au, f1 in new["f1"].items()], key="retrain-per-au-f1")


@flow(name="retrain", log_prints=True)
def retrain_flow(workspace: str = ".", targets: list[str] | None = None, tolerance: float | None = None,
                 sync_remotes: bool = True) -> dict:
    """Retrain on the pool's new batches as a DVC experiment; promote when not worse. Returns what happened."""
    log = get_run_logger()
    ws = Path(workspace).resolve()
    with retrain.workspace_lock(ws):
        if sync_remotes:
            log.info(f"synced: {', '.join(pull(ws)) or 'no remote set'}")
        params = load_params(ws / "params.yaml")
        todo = retrain.pending(ws, params)
        if not todo["run"]:
            log.info(todo["reason"])
            create_markdown_artifact(f"# Retrain: nothing to do\n\n- {todo['reason']}", key="retrain-summary")
            return {"ran": False, "promoted": False, "reason": todo["reason"]}
        log.info(todo["reason"])
        name = retrain.experiment_name()
        before = retrain.changed_files(ws)
        log.info(experiment(ws, name, targets or params.flows.retrain_targets)[-2000:])
        changed = retrain.changed_files(ws) - before
        result = promote(ws, name, params.flows.promote_tolerance if tolerance is None else tolerance, changed)
        log.info(result["reason"])
        if sync_remotes:
            result["shared"] = push(ws, params.flows.git_remote, name)
    _publish(result)
    return {"ran": True, **result}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", default=".")
    ap.add_argument("--no-sync", action="store_true", help="do not pull from / push to the git and DVC remotes")
    args = ap.parse_args()
    print(retrain_flow(args.workspace, sync_remotes=not args.no_sync))
