"""The ingest flow under Prefect's test harness: a good batch lands in the pool, a bad one is quarantined with the
failing expectations named, and the Dask task runner extracts exactly what the in-process path does."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import yaml

from clpau.config import PretrainParams
from clpau.train.pretrain import run_pretrain

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _workspace(tmp_path, batches, videos_from: str | None, task_runner: str = "thread",
               inbox_files: dict[str, Path] | None = None, drift_action: str = "retrain") -> Path:
    """A params file whose inbox holds copies of one batch's videos (or of `inbox_files`: name -> file); the pool
    of 24 synthetic people is the reference and the training set's base corpus."""
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
                            "clips": str(tmp_path / "no_benchmark_clips")},
              "drift": {"encoder": str(enc / "encoder.pt"), "embedding_components": 4, "action": drift_action}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_good_batch_is_accepted_into_the_pool(harness, batches, tmp_path):
    from flows.ingest import build_flow

    params = _workspace(tmp_path, batches, "good")
    result = build_flow(str(params))(str(params), "b1")
    assert result["accepted"], result["reasons"]
    pooled = sorted(p.name for p in (tmp_path / "pool" / "b1" / "videos").glob("*.mp4"))
    assert pooled == sorted(p.name for p in batches["good"][0].glob("*.mp4")) and len(pooled) == 8
    # the batch's extract output is kept beside its videos: the trainset stage reads it, nothing is extracted twice
    kept = pd.read_parquet(tmp_path / "pool" / "b1" / "clips" / "clips.parquet")
    assert len(kept) == result["clips"] > 0
    assert not list((tmp_path / "inbox").rglob("*.mp4"))  # staged out of the inbox
    summary = _artifacts("ingest-summary")
    assert summary and "accepted into the training pool" in summary[0].data
    assert _artifacts("ingest-gx-docs") and _artifacts("ingest-drift-report")


def test_bad_batch_is_quarantined_with_the_failing_expectations(harness, batches, tmp_path):
    from flows.ingest import build_flow

    params = _workspace(tmp_path, batches, "bad")
    result = build_flow(str(params))(str(params), "b2")
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
    table = _artifacts("ingest-checks")
    assert table and "brightness" in table[0].data


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
    """Real faces: two good videos are accepted while a video with the face in 43 % of its frames, a dark room and
    an evaluation subject's namesake are quarantined, each with its own reason naming the file; a person releases
    the interview (recorded in batch.json), the evaluation subject cannot be released."""
    from flows.ingest import build_flow

    talk = sorted(real_videos["talk"].glob("*.mp4"))
    params = _workspace(tmp_path, batches, None, inbox_files={
        "anna_talk.mp4": talk[0], "single.mp4": real_videos["single"], "bob_interview.mp4": real_videos["interview"],
        "dark_room.mp4": real_videos["dark_room"], "S003_home.mp4": talk[1]})
    result = build_flow(str(params))(str(params), "m1")
    assert sorted(result["accepted_videos"]) == ["anna_talk.mp4", "single.mp4"], result["reasons"]
    assert sorted(result["quarantined_videos"]) == ["S003_home.mp4", "bob_interview.mp4", "dark_room.mp4"]
    record = json.loads((tmp_path / "q" / "m1" / "reasons.json").read_text())
    assert record["batch_reasons"] == []
    videos = record["videos"]
    assert videos["bob_interview.mp4"]["reasons"] == ["bob_interview.mp4: a face in 43% of frames (gate: 50%)"]
    assert all(r.startswith("dark_room.mp4: ") for r in videos["dark_room.mp4"]["reasons"])
    assert "S003_home.mp4 is named as the labelled benchmark's evaluation subject S003" in \
        " ".join(videos["S003_home.mp4"]["reasons"])
    pooled = json.loads((tmp_path / "pool" / "m1" / "batch.json").read_text())
    assert pooled["videos"] == ["anna_talk.mp4", "single.mp4"] and pooled["quarantined"] == sorted(
        ["S003_home.mp4", "bob_interview.mp4", "dark_room.mp4"])
    assert sorted(p.name for p in (tmp_path / "pool" / "m1" / "videos").iterdir()) == ["anna_talk.mp4", "single.mp4"]
    assert sorted(pd.read_parquet(tmp_path / "pool" / "m1" / "clips" / "clips.parquet")["identity"].unique()) == \
        ["anna_talk", "single"]
    tables = [a.data for a in _artifacts("ingest-videos") if "bob_interview.mp4" in a.data]  # one row per video
    assert len(tables) == 1 and all(v in tables[0] for v in ("anna_talk.mp4", "dark_room.mp4", "S003_home.mp4"))

    # a person reviews the interview and releases it; the evaluation subject's namesake cannot be released
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
    assert not (tmp_path / "pool" / "m1-r2").exists() and (tmp_path / "q" / "m1" / "videos" / "S003_home.mp4").exists()
    code, _, err = _cli("--params", p, "ingest", "release", "m1", "anna_talk.mp4", "--reason", "x", "--no-version")
    assert code == 3 and "not waiting in quarantine/m1: anna_talk.mp4" in err, err  # it was accepted
    listed = _cli("--params", p, "ingest", "list")[1]
    assert "bob_interview.mp4 [released into m1-r1]" in listed and "S003_home.mp4 [quarantined]" in listed


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


def test_prefect_yaml_registers_its_deployments_with_schedules(harness, tmp_path):
    """`prefect deploy --all` (the CLI, as `make serve` runs it) against the test harness's server on 127.0.0.1."""
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
