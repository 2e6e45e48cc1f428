"""Prefect flows: ingest the inbox's new videos as one batch, decided video by video — extract (a task per video,
retried) → quality gate per video (Great Expectations) → drift of the passing videos (Evidently, against the
promoted model's training set) → accept them into the pool (trainset.pool: videos + clips, `dvc add`, a git commit,
`dvc push` + `git push` where remotes are set) and quarantine the others, each with reasons naming the file. A
drifted batch is accepted and starts a retrain run (`drift.action: retrain`) or is held for review (`hold`).
Evaluation subjects of the labelled benchmark and videos accepted before are refused. `ingest-release` puts
quarantined videos a person approved into the pool, through the same guards.

A thin wrapper over `clpau.ingest`, `clpau.validate` and `clpau.drift`; run it once with
`python flows/ingest.py [--params params.yaml]`, or on a schedule through the `ingest-nightly` deployment
(prefect.yaml); release with `clpau ingest release BATCH [VIDEO…] --reason …` or the `ingest-release` deployment. `flows.task_runner: dask` runs the per-video tasks on a Dask cluster (`flows.dask_address`, or a
local one).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from clpau.config import Params, load_params
from clpau.ops import ingest, sync
from clpau.ops.drift import run_drift
from clpau.ops.validate import validate_tables


@task(name="extract-video", retries=2, retry_delay_seconds=5, task_run_name="extract {video.name}")
def extract_video(video: Path, parts_dir: Path, params: Params) -> Path:
    return ingest.extract_one(video, parts_dir, params)


@task(name="quality-gate")
def quality_gate(videos: pd.DataFrame, clips: pd.DataFrame, params: Params, out: Path) -> dict:
    return validate_tables(videos, clips, params.validate, out, name=Path(out).parent.parent.name, data=str(out))


def drift_reference(params: Params) -> Path | None:
    """What the promoted model was trained on; before the first promotion, the current training set."""
    for ref in (Path(params.flows.reference), Path(params.trainset.out_dir)):
        if (ref / "clips.parquet").exists():
            return ref
    return None


@task(name="drift-check")
def drift_check(clips: list[Path], params: Params, out: Path) -> dict | None:
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


@task(name="request-retrain")
def request_retrain(deployment: str | None, batch: str) -> str:
    """Start a run of the retrain deployment now (a drifted batch was accepted: `drift.action: retrain`); where
    none is registered, the next scheduled retrain trains on the batch (its batch.json says `retrain_due`)."""
    if not deployment:
        return "flows.retrain_deployment is null: the next scheduled retrain trains on it"
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        run = run_deployment(deployment, timeout=0, as_subflow=False, tags=["drift"])
    except ObjectNotFound:
        return f"no deployment {deployment} on this Prefect server: the next scheduled retrain trains on it"
    return f"retrain requested: flow run {run.name} of {deployment} (drift in batch {batch})"


def _publish(batch: str, summary: dict, decision: dict, validation: dict, drift: dict | None) -> None:
    n = len(decision["videos"])
    accepted = ingest.with_verdict(decision, ingest.ACCEPTED)
    lines = [f"# Batch {batch}: {len(accepted)} of {n} videos accepted into the training pool",
             f"- quality gate: {validation['videos_passed']} of {n} videos pass ({validation['checked']} expectations)"]
    if drift is not None:
        lines.append(f"- drift: {'yes' if drift['drift'] else 'no'} ({drift['drifted_share']:.0%} of columns, "
                     f"{drift.get('videos')} videos) against {drift['reference']}; drift.action: "
                     f"{decision['drift']['action']}")
    if summary.get("retrain"):
        lines.append(f"- {summary['retrain']}")
    if summary.get("commit"):
        lines.append(f"- pool version committed: {summary['commit'][:10]}; shared: "
                     f"{', '.join(summary.get('shared') or []) or 'no remote set'}")
    lines += ["", *(f"- **{r}**" for r in decision["batch_reasons"])]
    create_markdown_artifact("\n".join(lines), key="ingest-summary", description=f"batch {batch}")
    rows = [{"video": v, "verdict": d["verdict"], "face share": f"{d['face_share']:.0%}", "clips": d["clips"],
             "reasons": "; ".join(d["reasons"] + d.get("notes", [])) or "-"} for v, d in decision["videos"].items()]
    create_table_artifact(rows, key="ingest-videos", description=f"batch {batch}: one row per video")
    checks = [{"check": "quality", "what": f["reason"], "failed": True} for f in validation["failed"]]
    if drift is not None:
        checks += [{"check": "drift", "what": f"{c} ({v['method']} = {v['value']:.3g})", "failed": v["drift"]}
                   for c, v in drift["columns"].items()]
    if checks:
        create_table_artifact(checks, key="ingest-checks", description=f"batch {batch}: checks over the batch")
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
    parts = {v.relative_to(root / "videos").as_posix(): fut.result() for v, fut in zip(videos, futures, strict=True)}
    table, clips = ingest.read_parts(list(parts.values()))  # one row per part, in the parts' order
    keys = dict(zip(parts, table["video"], strict=True))
    validation = quality_gate(table, clips, params, root / "reports" / "validate")
    pool = params.trainset.pool
    batch_refused = [f"batch: a batch named {name} is already in {pool}"] if (Path(pool) / name).exists() else []
    guarded = ingest.guards(table, pool, params.benchmark, params.trainset.face_threshold)
    decision = ingest.decide(validation, keys, guarded, batch_refused, table)
    passing = ingest.with_verdict(decision, ingest.ACCEPTED)
    drift = drift_check([parts[v] for v in passing], params, root / "reports") if passing else None
    decision = ingest.apply_drift(decision, drift, params.drift.action)
    accepted = ingest.with_verdict(decision, ingest.ACCEPTED)
    summary = {"batch": name, "videos": len(videos), "reports": str(root / "reports"), "accepted": bool(accepted),
               "accepted_videos": accepted, "quarantined_videos": ingest.with_verdict(decision, ingest.QUARANTINED),
               "held_videos": ingest.with_verdict(decision, ingest.HELD), "reasons": ingest.flat_reasons(decision),
               "drift": decision["drift"]}
    if accepted:
        summary.update(ingest.accept(root, pool, decision, parts))
        log.info(f"batch {name}: {len(accepted)} of {len(videos)} videos accepted into {pool}")
        workspace = ingest.dvc_root(Path(pool))
        if summary["dvc_versioned"] and workspace is not None:
            summary["shared"] = share(workspace, f.git_remote, str(Path(pool).resolve().relative_to(workspace)) + ".dvc")
        if decision["drift"] and decision["drift"]["drift"]:
            summary["retrain"] = request_retrain(f.retrain_deployment, name)
            log.info(summary["retrain"])
    if len(accepted) < len(videos):
        summary.update(ingest.quarantine(root, f.quarantine, decision, parts))
        for v in summary["quarantined"]:
            log.warning(f"{v}: {decision['videos'][v]['verdict']}: " + "; ".join(decision["videos"][v]["reasons"]))
    _publish(name, summary, decision, validation, drift)
    return summary


@flow(name="ingest-batch", log_prints=True)
def ingest_batch(params_file: str = "params.yaml", batch: str | None = None) -> dict:
    """Stage the inbox as one batch, extract each video, gate each video, check the passing ones for drift,
    accept them or quarantine them with their reasons. Returns the decision."""
    return _ingest(params_file, batch)


@flow(name="ingest-release", log_prints=True)
def release_batch(batch: str, reason: str, videos: list[str] | None = None, released_by: str | None = None,
                  params_file: str = "params.yaml") -> dict:
    """Release quarantined videos a person approved (all of the batch's when `videos` is empty) into the pool,
    through the guards (evaluation subjects, videos already in the pool); recorded in the new batch.json."""
    params = load_params(params_file)
    result = ingest.release(params.flows.quarantine, params.trainset.pool, batch, videos, released_by, reason,
                            params.benchmark, face_threshold=params.trainset.face_threshold)
    workspace = ingest.dvc_root(Path(params.trainset.pool))
    if result["dvc_versioned"] and workspace is not None:
        pointer = str(Path(params.trainset.pool).resolve().relative_to(workspace)) + ".dvc"
        result["shared"] = share(workspace, params.flows.git_remote, pointer)
    create_markdown_artifact(f"# Released {len(result['videos'])} videos of {batch} into {result['batch']}\n\n"
                             f"- by {result['released_by']}: {reason}\n- videos: {', '.join(result['videos'])}",
                             key="ingest-release")
    return result


def build_flow(params_file: str = "params.yaml"):
    """The flow with the task runner that params.yaml asks for (thread pool, or Dask)."""
    return ingest_batch.with_options(task_runner=task_runner_for(load_params(params_file)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--batch", help="batch name (default: the time)")
    args = ap.parse_args()
    print(build_flow(args.params)(args.params, args.batch))
