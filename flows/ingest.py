"""Prefect flow: ingest the inbox's new videos as one batch — extract (a task per video, retried) → quality gate
(Great Expectations) → drift (Evidently, against the promoted model's training set) → accept into the pool
(trainset.pool: videos + clips, `dvc add`, a git commit, `dvc push` + `git push` where remotes are set) or
quarantine with the reasons. Evaluation subjects of the labelled benchmark and videos accepted before are refused.

A thin wrapper over `clpau.ingest`, `clpau.validate` and `clpau.drift`; run it once with
`python flows/ingest.py [--params params.yaml]`, or on a schedule through the `ingest-nightly` deployment
(prefect.yaml). `flows.task_runner: dask` runs the per-video tasks on a Dask cluster (`flows.dask_address`, or a
local one).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from clpau import ingest, sync
from clpau.config import Params, load_params
from clpau.drift import run_drift
from clpau.validate import run_validate


@task(name="extract-video", retries=2, retry_delay_seconds=5, task_run_name="extract {video.name}")
def extract_video(video: Path, parts_dir: Path, params: Params) -> Path:
    return ingest.extract_one(video, parts_dir, params)


@task(name="quality-gate")
def quality_gate(clips: Path, params: Params, out: Path) -> dict:
    return run_validate(clips, params.validate, out)


def drift_reference(params: Params) -> Path | None:
    """What the promoted model was trained on; before the first promotion, the current training set."""
    for ref in (Path(params.flows.reference), Path(params.trainset.out_dir)):
        if (ref / "clips.parquet").exists():
            return ref
    return None


@task(name="drift-check")
def drift_check(clips: Path, params: Params, out: Path) -> dict | None:
    ref = drift_reference(params)
    if ref is None:
        get_run_logger().warning(f"no training set at {params.flows.reference} or {params.trainset.out_dir} "
                                 "(run `clpau trainset`): drift not checked")
        return None
    videos = pd.read_parquet(ref / "clips.parquet", columns=["video"])["video"].nunique()
    if videos < params.drift.min_reference_videos:
        get_run_logger().warning(f"the training set {ref} has {videos} videos (< drift.min_reference_videos = "
                                 f"{params.drift.min_reference_videos}): drift not checked")
        return None
    return {**run_drift(ref, clips, params.drift, out), "reference": str(ref)}


@task(name="share")
def share(workspace: Path, remote: str | None, pointer: str) -> list[str]:
    """Push the pool's new version and its commit, so the training side can pull them."""
    return sync.push(workspace, remote, [pointer])


def _publish(batch: str, summary: dict, validation: dict, drift: dict | None) -> None:
    verdict = "accepted into the training pool" if summary["accepted"] else "**quarantined**"
    lines = [f"# Batch {batch}: {verdict}", "", f"- videos: {summary['videos']}, clips: {validation['clips']}",
             f"- quality gate: {'passed' if validation['success'] else 'failed'} ({validation['checked']} "
             f"expectations)"]
    if drift is not None:
        lines.append(f"- drift: {'yes' if drift['drift'] else 'no'} ({drift['drifted_share']:.0%} of columns) "
                     f"against {drift['reference']}")
    if summary.get("commit"):
        lines.append(f"- pool version committed: {summary['commit'][:10]}; shared: "
                     f"{', '.join(summary.get('shared') or []) or 'no remote set'}")
    lines += ["", *(f"- {r}" for r in summary["reasons"])]
    create_markdown_artifact("\n".join(lines), key="ingest-summary", description=f"batch {batch}")
    rows = [{"check": "quality", "what": f["reason"], "failed": True} for f in validation["failed"]]
    if drift is not None:
        rows += [{"check": "drift", "what": f"{c} ({v['method']} = {v['value']:.3g})", "failed": v["drift"]}
                 for c, v in drift["columns"].items()]
    if rows:
        create_table_artifact(rows, key="ingest-checks", description=f"batch {batch}: checks")
    if validation.get("docs"):
        create_link_artifact(Path(validation["docs"]).resolve().as_uri(), link_text="Great Expectations data docs",
                             key="ingest-gx-docs")
    if drift is not None:
        create_link_artifact((Path(summary["reports"]) / "drift.html").resolve().as_uri(),
                             link_text="Evidently drift report", key="ingest-drift-report")


def task_runner_for(params: Params):
    if params.flows.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if params.flows.dask_address:
            return DaskTaskRunner(address=params.flows.dask_address)

        class LocalDaskTaskRunner(DaskTaskRunner):
            """A local cluster that leaves this process's environment as it found it: to start its workers, Dask's
            nanny sets OMP_NUM_THREADS=1 (and MKL's, OpenBLAS's, a malloc setting) in the *parent's* os.environ and
            never unsets it, so every process started here afterwards — a training run, `dvc repro` — would run on
            one thread (found when a pretraining run in the test suite after the Dask test got 1 thread)."""

            def __enter__(self):
                self._environ = dict(os.environ)
                return super().__enter__()

            def __exit__(self, *exc) -> None:
                try:
                    super().__exit__(*exc)
                finally:
                    os.environ.clear()
                    os.environ.update(self._environ)

        return LocalDaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=2)


def _ingest(params_file: str = "params.yaml", batch: str | None = None) -> dict:
    log = get_run_logger()
    params = load_params(params_file)
    f = params.flows
    name, videos = ingest.stage_batch(f.inbox, f.batches, batch)
    if not videos:
        log.info(f"no new video in {f.inbox}")
        return {"batch": None, "videos": 0, "accepted": False, "reasons": ["empty inbox"]}
    root = Path(f.batches) / name
    log.info(f"batch {name}: {len(videos)} videos")
    futures = [extract_video.with_options(retries=f.retries).submit(v, root / "parts", params) for v in videos]
    parts = [fut.result() for fut in futures]
    clips = ingest.merge_extracts(parts, root / "clips")
    validation = quality_gate(clips, params, root / "reports" / "validate")
    drift = drift_check(clips, params, root / "reports") if validation["success"] else None
    pool = params.trainset.pool
    decision = ingest.decide(validation, drift, ingest.refusals(clips, pool, params.benchmark, name))
    summary = {"batch": name, "videos": len(videos), "reports": str(root / "reports"), **decision}
    if decision["accepted"]:
        summary.update(ingest.accept(root, pool))
        log.info(f"batch {name} accepted into {pool}")
        workspace = ingest.dvc_root(Path(pool))
        if summary["dvc_versioned"] and workspace is not None:
            summary["shared"] = share(workspace, f.git_remote, str(Path(pool).resolve().relative_to(workspace)) + ".dvc")
    else:
        summary.update(ingest.quarantine(root, f.quarantine, decision))
        log.warning(f"batch {name} quarantined: " + "; ".join(decision["reasons"]))
    _publish(name, summary, validation, drift)
    return summary


@flow(name="ingest-batch", log_prints=True)
def ingest_batch(params_file: str = "params.yaml", batch: str | None = None) -> dict:
    """Stage the inbox as one batch, extract, gate, check drift, accept or quarantine. Returns the decision."""
    return _ingest(params_file, batch)


def build_flow(params_file: str = "params.yaml"):
    """The flow with the task runner that params.yaml asks for (thread pool, or Dask)."""
    return ingest_batch.with_options(task_runner=task_runner_for(load_params(params_file)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--batch", help="batch name (default: the time)")
    args = ap.parse_args()
    print(build_flow(args.params)(args.params, args.batch))
