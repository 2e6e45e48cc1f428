"""The ingest flow under Prefect's test harness: a good batch lands in the pool, a bad one is quarantined with the
failing expectations named, and the Dask task runner extracts exactly what the in-process path does."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from clpau.config import PretrainParams
from clpau.pretrain import run_pretrain

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _workspace(tmp_path, batches, videos_from: str, task_runner: str = "thread") -> Path:
    """A params file whose inbox holds copies of one batch's videos; the pool of 24 people is the reference."""
    inbox = tmp_path / "inbox"
    shutil.copytree(batches[videos_from][0], inbox)
    enc = tmp_path / "models"
    run_pretrain(PretrainParams(data=[batches["pool"][1]], method="random", out_dir=enc, live_dir=tmp_path / "l"),
                 progress=False, log=lambda *_: None)
    params = {"flows": {"inbox": str(inbox), "quarantine": str(tmp_path / "q"),
                        "batches": str(tmp_path / "batches"), "reference": str(batches["pool"][1]),
                        "task_runner": task_runner},
              "trainset": {"pool": str(tmp_path / "pool")},
              "drift": {"encoder": str(enc / "encoder.pt"), "embedding_components": 4}}
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
    assert len(list(q.glob("*.mp4"))) == 4
    assert json.loads((q / "reasons.json").read_text())["reasons"] == result["reasons"]
    table = _artifacts("ingest-checks")
    assert table and "brightness" in table[0].data


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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prefect_yaml_registers_both_deployments_with_schedules(tmp_path):
    """`prefect deploy --all` against a real local server bound to 127.0.0.1 (as `make serve` does)."""
    import subprocess
    import time
    import urllib.request

    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    prefect = str(Path(sys.executable).parent / "prefect")
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the Prefect server did not come up in 120 s")
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
                         "retrain-weekly gpu 1 ['0 3 * * 0'] [True]"], out.stdout + out.stderr
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
