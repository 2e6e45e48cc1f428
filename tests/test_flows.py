"""The ingest flow under Prefect's test harness: a good batch lands in the pool, a bad one is quarantined with the
failing expectations named, and the Dask task runner extracts exactly what the in-process path does."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from clpau.config import ExtractParams, PretrainParams
from clpau.train.pretrain import run_pretrain

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _workspace(tmp_path, batches, videos_from: str | None, task_runner: str = "thread",
               inbox_files: dict[str, Path] | None = None, drift_action: str = "retrain",
               benchmark_clips: Path | None = None) -> Path:
    """A params file whose inbox holds copies of one batch's videos (or of `inbox_files`: name -> file); the pool
    of 24 synthetic people is the reference and the training set's base corpus; `benchmark_clips`: the labelled
    benchmark's extract output (default: none)."""
    inbox = tmp_path / "inbox"
    if videos_from:
        shutil.copytree(batches[videos_from][0], inbox)
    for name, path in (inbox_files or {}).items():
        inbox.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, inbox / name)
    enc = tmp_path / "models"
    run_pretrain(PretrainParams(data=[batches["pool"][1]], method="random", out_dir=enc, live_dir=tmp_path / "l"),
                 progress=False, log=lambda *_: None)
    params = {"flows": {"inbox": str(inbox), "quarantine": str(tmp_path / "q"),
                        "batches": str(tmp_path / "batches"), "reference": str(batches["pool"][1]),
                        "task_runner": task_runner},
              "trainset": {"pool": str(tmp_path / "pool"), "base": [str(batches["pool"][1])],
                           "out_dir": str(tmp_path / "trainset"), "metrics": str(tmp_path / "trainset.json")},
              "benchmark": {"folds": str(ROOT / "data" / "folds" / "synth.yaml"),
                            "clips": str(benchmark_clips or tmp_path / "no_benchmark_clips")},
              "drift": {"encoder": str(enc / "encoder.pt"), "embedding_components": 4, "action": drift_action}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _artifacts(key: str, run=None) -> list:
    """The artifacts of `key`; with `run` (a flow's final state) only that flow run's: the harness holds every
    test's runs, in no set order."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    flow_run = None if run is None else ArtifactFilterFlowRunId(any_=[run.state_details.flow_run_id])
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]),
                                                                    flow_run_id=flow_run))


def _table(artifact) -> list[dict]:
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def test_good_batch_is_accepted_into_the_pool(harness, batches, tmp_path):
    from flows.ingest import build_flow

    params = _workspace(tmp_path, batches, "good")
    run = build_flow(str(params))(str(params), "b1", return_state=True)
    result = run.result()
    assert result["accepted"], result["reasons"]
    pooled = sorted(p.name for p in (tmp_path / "pool" / "b1" / "videos").glob("*.mp4"))
    assert pooled == sorted(p.name for p in batches["good"][0].glob("*.mp4")) and len(pooled) == 8
    # the batch's extract output is kept beside its videos: the trainset stage reads it, nothing is extracted twice
    kept = pd.read_parquet(tmp_path / "pool" / "b1" / "clips" / "clips.parquet")
    assert len(kept) == result["clips"] > 0
    assert not list((tmp_path / "inbox").rglob("*.mp4"))  # staged out of the inbox
    # this run's own artifacts: every one of the 8 videos accepted, each with no reason against it
    (summary,) = _artifacts("ingest-summary", run)
    assert summary.data.startswith("# Batch b1: 8 of 8 videos accepted into the training pool\n"), summary.data
    assert "- quality gate: 8 of 8 videos pass" in summary.data
    (videos,) = _artifacts("ingest-videos", run)
    assert sorted((r["video"], r["verdict"], r["reasons"]) for r in _table(videos)) == sorted(
        (name, "accepted", "-") for name in pooled)
    assert len(_artifacts("ingest-gx-docs", run)) == 1 and len(_artifacts("ingest-drift-report", run)) == 1


def test_bad_batch_is_quarantined_with_the_failing_expectations(harness, batches, tmp_path):
    from flows.ingest import build_flow

    params = _workspace(tmp_path, batches, "bad")
    run = build_flow(str(params))(str(params), "b2", return_state=True)
    result = run.result()
    assert not result["accepted"]
    assert any("videos give face clips" in r for r in result["reasons"])
    assert any("brightness" in r for r in result["reasons"])
    assert not (tmp_path / "pool").exists()  # nothing reaches training
    q = tmp_path / "q" / "b2"
    assert len(list((q / "videos").glob("*.mp4"))) == 4
    record = json.loads((q / "reasons.json").read_text())
    assert record["reasons"] == result["reasons"]
    # most videos give no face clip: a batch-level reason, and each video keeps its own
    assert record["batch_reasons"] == ["batch: 1 of 4 videos give face clips (gate: at least 50%): the batch is "
                                       "mostly unusable, every video of it is held back"], record["batch_reasons"]
    assert any(r.startswith("dark_room.mp4: ") and "brightness" in r for r in record["videos"]["dark_room.mp4"]["reasons"])
    assert record["videos"]["corrupt.mp4"]["reasons"][0].startswith("corrupt.mp4: no face clip")
    # this run's own artifacts: 0 of 4 accepted, and per video the verdict and the reason named in reasons.json
    (summary,) = _artifacts("ingest-summary", run)
    assert summary.data.startswith("# Batch b2: 0 of 4 videos accepted into the training pool\n"), summary.data
    (videos,) = _artifacts("ingest-videos", run)
    rows = {r["video"]: r for r in _table(videos)}
    assert sorted(rows) == sorted(record["videos"]) and {r["verdict"] for r in rows.values()} == {"quarantined"}
    for name, row in rows.items():
        assert row["reasons"] == "; ".join(record["videos"][name]["reasons"])
    assert "brightness" in rows["dark_room.mp4"]["reasons"] and "no face clip" in rows["corrupt.mp4"]["reasons"]
    (checks,) = _artifacts("ingest-checks", run)
    assert any(c["check"] == "quality" and "brightness" in c["what"] and c["failed"] for c in _table(checks))


def _cli(*argv: str) -> tuple[int, str, str]:
    """`clpau ARGV` in this process: (exit status, stdout, stderr). Not capsys: Prefect's log handler, set up
    during a test, would keep capsys's stream after that test closed it."""
    import contextlib
    import io

    from clpau.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_a_mixed_inbox_of_real_video_is_decided_video_by_video(harness, batches, real_videos, tmp_path):
    """Real faces: a good video and a truncated one (accepted, its decision saying how much of it was used) while a
    video with the face in 43 % of its frames, a dark room, an evaluation subject's namesake and a mirrored copy of
    an evaluation subject under another name are quarantined, each with its own reason naming the file; a person
    releases the interview (recorded in batch.json), the evaluation subjects cannot be released."""
    from clpau.video.decode import probe
    from clpau.video.extract import run_extract
    from flows.ingest import build_flow

    bench = tmp_path / "bench_videos"  # the labelled benchmark's S001 is the single-face sample's person
    bench.mkdir()
    shutil.copy(real_videos["single"], bench / "S001_T1.mp4")
    run_extract([bench], tmp_path / "bench_clips", ExtractParams(), workers=2, identity_rule="prefix", progress=False)
    talk = sorted(real_videos["talk"].glob("*.mp4"))
    params = _workspace(tmp_path, batches, None, benchmark_clips=tmp_path / "bench_clips", inbox_files={
        "anna_talk.mp4": talk[0], "holiday.mp4": real_videos["single_mirrored"], "cut_short.mp4":
        real_videos["truncated"], "bob_interview.mp4": real_videos["interview"], "dark_room.mp4":
        real_videos["dark_room"], "S003_home.mp4": talk[1]})
    result = build_flow(str(params))(str(params), "m1")
    assert sorted(result["accepted_videos"]) == ["anna_talk.mp4", "cut_short.mp4"], result["reasons"]
    quarantined = ["S003_home.mp4", "bob_interview.mp4", "dark_room.mp4", "holiday.mp4"]
    assert sorted(result["quarantined_videos"]) == quarantined
    record = json.loads((tmp_path / "q" / "m1" / "reasons.json").read_text())
    assert record["batch_reasons"] == []
    videos = record["videos"]
    assert videos["bob_interview.mp4"]["reasons"] == ["bob_interview.mp4: a face in 43% of frames (gate: 50%)"]
    assert all(r.startswith("dark_room.mp4: ") for r in videos["dark_room.mp4"]["reasons"])
    assert "S003_home.mp4 is named as the labelled benchmark's evaluation subject S003" in \
        " ".join(videos["S003_home.mp4"]["reasons"])
    assert "holiday.mp4 shows the labelled benchmark's evaluation subject S001 (face-descriptor distance 0." in \
        " ".join(videos["holiday.mp4"]["reasons"]), videos["holiday.mp4"]["reasons"]
    pooled = json.loads((tmp_path / "pool" / "m1" / "batch.json").read_text())
    assert pooled["videos"] == ["anna_talk.mp4", "cut_short.mp4"] and pooled["quarantined"] == quarantined
    info = probe(real_videos["truncated"])  # what the file holds and what its index declares: 228 of 472
    used = f"used {info.n_packets} of an expected {info.declared_frames} frames"
    assert pooled["notes"] == {"cut_short.mp4": [f"cut_short.mp4: truncated: {used} (the file holds "
                                                 f"{info.n_packets} of the 472 frames its index declares)"]}, pooled
    assert sorted(p.name for p in (tmp_path / "pool" / "m1" / "videos").iterdir()) == ["anna_talk.mp4",
                                                                                        "cut_short.mp4"]
    assert sorted(pd.read_parquet(tmp_path / "pool" / "m1" / "clips" / "clips.parquet")["identity"].unique()) == \
        ["anna_talk", "cut_short"]
    tables = [a.data for a in _artifacts("ingest-videos") if "bob_interview.mp4" in a.data]  # one row per video
    assert len(tables) == 1 and all(v in tables[0] for v in ("anna_talk.mp4", "dark_room.mp4", "S003_home.mp4"))
    assert used in tables[0]
    for published in (json.dumps(result), tables[0], json.dumps(record), json.dumps(pooled)):  # biometric data
        assert '"descriptor"' not in published and "other_faces" not in published  # stays in videos.parquet

    # a person reviews the interview and releases it; the evaluation subjects cannot be released
    p = str(params)
    assert _cli("--params", p, "ingest", "release", "m1", "bob_interview.mp4", "--by", "alice",
                "--reason", "face on screen in every clip used", "--no-version")[0] == 0
    released = json.loads((tmp_path / "pool" / "m1-r1" / "batch.json").read_text())
    assert released["videos"] == ["bob_interview.mp4"] and released["released_by"] == "alice"
    assert released["release_reason"] == "face on screen in every clip used"
    assert released["held_for"]["bob_interview.mp4"] == ["bob_interview.mp4: a face in 43% of frames (gate: 50%)"]
    assert (tmp_path / "pool" / "m1-r1" / "videos" / "bob_interview.mp4").exists() and released["clips"] > 0
    code, _, err = _cli("--params", p, "ingest", "release", "m1", "S003_home.mp4", "--reason", "it is not S003",
                        "--no-version")
    assert code == 3 and "evaluation subject S003" in err, err  # a refused input
    code, _, err = _cli("--params", p, "ingest", "release", "m1", "holiday.mp4", "--reason", "another name",
                        "--no-version")
    assert code == 3 and "shows the labelled benchmark's evaluation subject S001" in err, err
    assert not (tmp_path / "pool" / "m1-r2").exists() and (tmp_path / "q" / "m1" / "videos" / "S003_home.mp4").exists()
    code, _, err = _cli("--params", p, "ingest", "release", "m1", "anna_talk.mp4", "--reason", "x", "--no-version")
    assert code == 3 and "not waiting in quarantine/m1: anna_talk.mp4" in err, err  # it was accepted
    listed = _cli("--params", p, "ingest", "list")[1]
    assert "bob_interview.mp4 [released into m1-r1]" in listed and "S003_home.mp4 [quarantined]" in listed
    assert f"cut_short.mp4 [accepted]: cut_short.mp4: truncated: {used}" in listed, listed


def test_a_drifted_batch_of_real_faces_is_retrained_on_or_held(harness, batches, real_videos, tmp_path):
    """12 real-face videos against a synthetic training set drift. `drift.action: retrain` accepts them, marks
    the batch due, starts a run of the retrain deployment, and the next training set holds them; `hold` keeps
    them in quarantine for review."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from clpau.config import load_params
    from clpau.ops import retrain, trainset
    from flows.ingest import build_flow
    from flows.retrain import retrain_flow

    talk = {p.name: p for p in sorted(real_videos["talk"].glob("*.mp4"))}
    assert len(talk) == 12
    deployment = retrain_flow.to_deployment(name="retrain-weekly").apply()
    params = _workspace(tmp_path / "r", batches, None, inbox_files=talk)
    result = build_flow(str(params))(str(params), "d1")
    assert result["drift"]["drift"] and result["drift"]["videos"] == 12, result["drift"]
    assert sorted(result["accepted_videos"]) == sorted(talk) and not result["held_videos"]
    batch = json.loads((tmp_path / "r" / "pool" / "d1" / "batch.json").read_text())
    assert batch["retrain_due"] and batch["drift"]["action"] == "retrain"
    assert result["retrain"].startswith("retrain requested: flow run"), result["retrain"]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment])))
    assert len(runs) == 1 and runs[0].state.is_scheduled() and "drift" in runs[0].tags
    # what that run trains on: the training set holds the drifted batch
    p = load_params(params)
    todo = retrain.pending(tmp_path / "r", p.model_copy(update={"trainset": p.trainset.model_copy(
        update={"pool": Path("pool")})}))
    assert todo["run"] and todo["new_batches"] == ["d1"] and todo["drifted_batches"] == ["d1"], todo
    assert todo["reason"] == "no promoted model yet (drifted from the training set: d1)", todo
    composition = trainset.assemble(p.trainset, p.benchmark)
    assert composition["batches"] == ["d1"] and composition["sources"]["pool:d1"]["videos"] == 12
    assert composition["sources"]["pool:d1"]["persons"] == 1  # 12 names, one man: persons are found by face

    params = _workspace(tmp_path / "h", batches, None, inbox_files=talk, drift_action="hold")
    held = build_flow(str(params))(str(params), "d2")
    assert held["drift"]["drift"] and not held["accepted"] and sorted(held["held_videos"]) == sorted(talk)
    assert not (tmp_path / "h" / "pool" / "d2").exists()
    record = json.loads((tmp_path / "h" / "q" / "d2" / "reasons.json").read_text())
    assert all(d["verdict"] == "held" and "held for review" in d["reasons"][0] for d in record["videos"].values())


def test_dask_task_runner_extracts_the_same_clips(harness, batches, tmp_path):
    from flows.ingest import build_flow

    params = _workspace(tmp_path, batches, "good", task_runner="dask")
    environ = dict(os.environ)
    result = build_flow(str(params))(str(params), "b3")
    assert result["accepted"], result["reasons"]
    # Dask's nanny sets OMP_NUM_THREADS=1 & co. in this process to start its workers: they must not stay behind
    assert dict(os.environ) == environ, set(os.environ.items()) ^ set(environ.items())
    dask_clips = pd.read_parquet(tmp_path / "pool" / "b3" / "clips" / "clips.parquet")
    local = pd.read_parquet(batches["good"][1] / "clips.parquet")  # one in-process run_extract of the same videos
    cols = ["video_key", "start_frame", "n_frames", "det_score", "face_size", "brightness", "sharpness"]
    key = ["video_key", "start_frame"]
    pd.testing.assert_frame_equal(dask_clips[cols].sort_values(key).reset_index(drop=True),
                                  local[cols].sort_values(key).reset_index(drop=True))
    for key in dask_clips["video_key"].unique():
        a = tmp_path / "pool" / "b3" / "clips" / "frames" / key / "faces.npy"
        assert a.read_bytes() == (batches["good"][1] / "frames" / key / "faces.npy").read_bytes()


def test_prefect_yaml_registers_its_deployments_and_a_worker_runs_one(harness, batches, tmp_path):
    """`make serve`'s path: `prefect deploy --all` (the CLI) against the test harness's server on 127.0.0.1, then a
    run of the ingest-nightly deployment on a small mixed inbox, picked up by a process worker (`prefect worker
    start --run-once`, in its own process) and run to completion: the good video lands in the pool, the corrupt
    file in quarantine with its reason."""
    import subprocess

    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url.startswith("http://127.0.0.1:"), url
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    prefect = str(Path(sys.executable).parent / "prefect")
    for cmd in ([prefect, "work-pool", "create", "clpau-process", "--type", "process"],
                [prefect, "work-pool", "create", "gpu", "--type", "process"],
                [prefect, "--no-prompt", "deploy", "--all"]):
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    script = ("from prefect.client.orchestration import get_client\n"
              "with get_client(sync_client=True) as c:\n"
              "    for d in c.read_deployments():\n"
              "        gcl = d.global_concurrency_limit\n"
              "        print(d.name, d.work_pool_name, gcl.limit if gcl else None, "
              "[s.schedule.cron for s in d.schedules], [s.active for s in d.schedules])\n")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    lines = sorted(out.stdout.strip().splitlines())
    assert lines == ["ingest-nightly clpau-process None ['0 2 * * *'] [True]",
                     "ingest-release clpau-process None [] []",
                     "retrain-weekly gpu 1 ['0 3 * * 0'] [True]"], out.stdout + out.stderr

    good = sorted(batches["good"][0].glob("*.mp4"))[0]
    params = _workspace(tmp_path / "w", batches, None, inbox_files={
        good.name: good, "corrupt.mp4": batches["bad"][0] / "corrupt.mp4"})
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # this process's client: the harness's server
        deployment = client.read_deployment_by_name("ingest-batch/ingest-nightly")
        run = client.create_flow_run_from_deployment(deployment.id, parameters={"params_file": str(params),
                                                                                "batch": "w1"})
    t0 = time.monotonic()
    worker = subprocess.run([prefect, "worker", "start", "--pool", "clpau-process", "--run-once"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state.is_completed(), (state, worker.stdout[-3000:] + worker.stderr[-3000:])
    print(f"worker run: {time.monotonic() - t0:.1f} s")
    pooled = json.loads((tmp_path / "w" / "pool" / "w1" / "batch.json").read_text())
    assert pooled["videos"] == [good.name] and pooled["quarantined"] == ["corrupt.mp4"], pooled
    record = json.loads((tmp_path / "w" / "q" / "w1" / "reasons.json").read_text())
    assert record["videos"]["corrupt.mp4"]["reasons"][0].startswith("corrupt.mp4: "), record


def test_an_empty_inbox_is_a_run_that_changes_nothing(harness, batches, tmp_path):
    from flows.ingest import build_flow

    params = _workspace(tmp_path, batches, None)
    (tmp_path / "inbox").mkdir()
    result = build_flow(str(params))(str(params), "b0")
    assert result == {"batch": None, "videos": 0, "accepted": False, "reasons": ["empty inbox"]}
    assert not any((tmp_path / d).exists() for d in ("pool", "q", "batches/b0"))


def test_a_taken_batch_name_holds_every_video_a_retried_extraction_recovers_and_a_release_lands(
        harness, batches, tmp_path, monkeypatch):
    """Three rare paths in one batch of two new people: the first extraction of one video fails once (a transient
    error) and its task's retry recovers it; the batch's name is already in the pool, so both videos are held in
    quarantine (not lost) with that reason; the `ingest-release` flow puts them into the pool as b1-r1."""
    from clpau.ops import ingest
    from flows.ingest import build_flow, release_batch

    two = sorted(batches["good"][0].glob("*.mp4"))[:2]
    params = _workspace(tmp_path, batches, None, inbox_files={v.name: v for v in two})
    (tmp_path / "pool" / "b1").mkdir(parents=True)  # a batch of that name is in the pool already
    real, calls = ingest.extract_one, []

    def flaky(video, parts_dir, p):
        calls.append(video.name)
        if video.name == two[0].name and calls.count(video.name) == 1:
            raise OSError(f"{video.name}: a transient read error")
        return real(video, parts_dir, p)

    monkeypatch.setattr(ingest, "extract_one", flaky)
    result = build_flow(str(params))(str(params), "b1")
    assert sorted(calls) == sorted([two[0].name, two[0].name, two[1].name])  # one retry, of the failed video only
    assert not result["accepted"] and sorted(result["quarantined_videos"]) == sorted(v.name for v in two)
    record = json.loads((tmp_path / "q" / "b1" / "reasons.json").read_text())
    assert record["batch_reasons"] == [f"batch: a batch named b1 is already in {tmp_path / 'pool'}"]
    assert all(d["clips"] > 0 for d in record["videos"].values())  # the retried video was extracted whole
    assert sorted(p.name for p in (tmp_path / "q" / "b1" / "videos").glob("*.mp4")) == sorted(v.name for v in two)
    assert not list((tmp_path / "pool" / "b1").iterdir())  # the batch already there is untouched

    released = release_batch("b1", "names checked: new people", released_by="tester", params_file=str(params))
    assert released["batch"] == "b1-r1" and sorted(released["videos"]) == sorted(v.name for v in two)
    batch = json.loads((tmp_path / "pool" / "b1-r1" / "batch.json").read_text())
    assert batch["released_by"] == "tester" and batch["release_reason"] == "names checked: new people"
    assert sorted(p.name for p in (tmp_path / "pool" / "b1-r1" / "videos").glob("*.mp4")) == sorted(v.name for v in two)
    notes = [a.data for a in _artifacts("ingest-release") if "b1-r1" in a.data]
    assert notes and "by tester: names checked: new people" in notes[0]


def _git_workspace(tmp_path, monkeypatch) -> Path:
    """A git + DVC workspace whose promoted model scored mean F1 0.600, committed; the venv's dvc on PATH and a
    git identity, as the retrain flow's worker has them."""
    import subprocess

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for key, value in (("GIT_AUTHOR_NAME", "t"), ("GIT_AUTHOR_EMAIL", "t@t"), ("GIT_COMMITTER_NAME", "t"),
                       ("GIT_COMMITTER_EMAIL", "t@t"), ("DVC_NO_ANALYTICS", "1")):
        monkeypatch.setenv(key, value)
    ws = tmp_path / "ws"
    (ws / "models" / "promoted").mkdir(parents=True)
    (ws / "metrics").mkdir()
    evaluation = {"method": "tcl", "f1_mean": 0.6, "f1_std": 0.01, "f1": {"AU1": 0.6}}
    (ws / "models" / "promoted" / "evaluate.json").write_text(json.dumps(evaluation))
    (ws / "metrics" / "evaluate.json").write_text(json.dumps(evaluation))
    (ws / "params.yaml").write_text(yaml.safe_dump({"pretrain": {"seed": 0}}))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "promoted"]):
        subprocess.run(cmd, cwd=ws, check=True, capture_output=True)
    return ws


def test_a_worse_retrain_is_kept_out_the_workspace_goes_back_and_the_artifact_says_why(harness, tmp_path,
                                                                                       monkeypatch):
    from clpau.config import load_params
    from clpau.ops import retrain, sync
    from flows.retrain import _publish

    ws = _git_workspace(tmp_path, monkeypatch)
    head = sync.head(ws)
    # what the experiment left in the workspace: its params and a model 0.05 below the promoted one
    (ws / "params.yaml").write_text(yaml.safe_dump({"pretrain": {"seed": 1}}))
    worse = {"method": "tcl", "f1_mean": 0.55, "f1_std": 0.02, "same_subject_nn": 0.7, "f1": {"AU1": 0.55}}
    (ws / "metrics" / "evaluate.json").write_text(json.dumps(worse))
    changed = retrain.changed_files(ws)
    assert changed == {"params.yaml", "metrics/evaluate.json"}
    params = load_params(ws / "params.yaml")
    # within the tolerance it would be promoted; 0.05 below is beyond 0.049
    result = retrain.promote_if_better(ws, params, "retrain-worse", tolerance=0.049, changed=changed)
    assert result["promoted"] is False
    assert result["reason"] == ("mean F1 0.550 is below the promoted model's 0.600: kept the promoted model "
                                "(retrain-worse stays in `dvc exp show`)")
    assert yaml.safe_load((ws / "params.yaml").read_text()) == {"pretrain": {"seed": 0}}  # rolled back
    assert json.loads((ws / "metrics" / "evaluate.json").read_text())["f1_mean"] == 0.6
    assert json.loads((ws / "models" / "promoted" / "evaluate.json").read_text())["f1_mean"] == 0.6
    assert sync.head(ws) == head and retrain.changed_files(ws) == set()  # nothing committed, nothing left over
    from prefect import flow

    flow(name="publish-retrain")(_publish)(result)  # as the retrain flow publishes it, in a flow run
    summary = [a.data for a in _artifacts("retrain-summary") if "retrain-worse" in a.data]
    assert summary and "**not promoted**" in summary[0] and "0.550 is below the promoted model's 0.600" in summary[0]


def test_a_second_retrain_of_one_workspace_is_refused_while_the_first_runs(harness, tmp_path, monkeypatch):
    import subprocess

    from clpau.ops.retrain import Busy, workspace_lock
    from flows.retrain import retrain_flow

    ws = _git_workspace(tmp_path, monkeypatch)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from clpau.ops.retrain import workspace_lock\n"
                               f"with workspace_lock(Path({str(ws)!r})):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match="another retraining is running in .*\\.clpau-retrain\\.lock is locked"):
            retrain_flow(str(ws), sync_remotes=False)
        assert _lock_free(ws) is False
    finally:
        holder.kill()
        holder.wait()
    with workspace_lock(ws):  # free again once the first run ends, however it ended
        pass


def _lock_free(ws: Path) -> bool:
    from clpau.ops.retrain import Busy, workspace_lock

    try:
        with workspace_lock(ws):
            return True
    except Busy:
        return False
