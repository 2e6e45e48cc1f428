"""The DVC pipeline in a real, throw-away DVC repo: `dvc repro` runs every stage, a second run does nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from clpau.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    """A throw-away git + DVC repo of this project (code, dvc.yaml, fold files, tiny params) after `dvc repro`."""
    repo = tmp_path_factory.mktemp("dvc") / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "data" / "folds", repo / "data" / "folds")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["assets"]["cache_dir"] = str(ROOT / "data" / "cache")  # reuse the machine's wheel cache
    # a tiny synthetic set: the point here is the pipeline, not the data
    params["synth"]["pretrain"] = {"identities": 2, "videos_per_identity": 1, "frames": 20}
    params["synth"]["labelled"] = {"tasks": 1, "frames": 20, "speech": 0.5}
    params["pretrain"].update(max_steps=3, batch_clips=2, clip_len=4, queue_size=64, num_workers=0, log_every=1)
    params["evaluate"].update(seeds=1, label_fractions=[0.5, 1.0], embedding_frames=100)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "DO_NOT_TRACK": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    _run(["git", "init", "-q"], repo, env)
    _run([str(BIN / "dvc"), "init", "-q"], repo, env)
    # a repo with a commit, as users have it (dvclive 3.49 fails on a repo without one)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "init"], repo, env)
    _run([str(BIN / "dvc"), "repro"], repo, env)
    return repo, env


def test_dvc_repro_runs_the_pipeline(dvc_repo):
    repo, env = dvc_repo
    out = repo / "data" / "clips" / "samples"
    videos = pd.read_parquet(out / "videos.parquet")
    labelled = pd.read_parquet(repo / "data" / "clips" / "synth_labelled" / "videos.parquet")
    assert len(labelled) == 24 and set(labelled["status"]) <= {"ok", "too_short"}
    assert len(pd.read_parquet(repo / "data" / "clips" / "synth_pretrain" / "videos.parquet")) == 2
    assert len(list((repo / "data" / "labels" / "synth" / "labelled").glob("*.csv"))) == 24
    clips = pd.read_parquet(out / "clips.parquet")
    status = dict(zip(videos["video"].map(lambda s: Path(s).name), videos["status"], strict=True))
    assert status == {"WolfgangLanger_Pexels.mp4": "ok", "no_face.mp4": "no_face", "single_face.mp4": "ok"}
    assert len(clips) > 50
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"assets", "synth", "extract@samples", "extract@synth_pretrain",
                                   "extract@synth_labelled", "validate@samples", "validate@synth_pretrain",
                                   "pretrain", "evaluate"}
    assert (repo / "models" / "encoder.pt").exists()
    metrics = json.loads(_run([str(BIN / "dvc"), "metrics", "show", "--json"], repo, env))
    shown = json.dumps(metrics)
    assert '"loss"' in shown and '"f1_mean"' in shown and '"identity_leakage"' in shown
    evaluation = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert evaluation["method"] == "clp" and 0 <= evaluation["f1_mean"] <= 1 and len(evaluation["f1"]) == 12
    for png in ("per_au_f1.png", "label_efficiency.png", "embedding.png"):
        assert (repo / "metrics" / "evaluate" / png).stat().st_size > 5000
    assert (repo / "models" / "probe.pt").exists()

    # methods are compared as DVC experiments; `clpau compare` makes one table of them
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "pipeline"], repo, env)
    _run([str(BIN / "dvc"), "exp", "run", "--temp", "-n", "cmp-random", "-S", "pretrain.method=random"], repo, env)
    table = _run([str(BIN / "clpau"), "compare", "--out", "compare.md"], repo, env)
    summary, runs = table.split("## F1 per AU")[0], table.split("## Runs")[1]
    rows = [line for line in summary.splitlines() if line.startswith(("| random |", "| clp |"))]
    assert len(rows) == 2 and rows[0].startswith("| random | 0 |"), table  # one row per method, in ORDER
    assert "| random | 0 | cmp-random |" in runs and "| clp | 0 | workspace |" in runs, table
    assert "## F1 per AU" in (repo / "compare.md").read_text()
    assert (repo / "compare.png").stat().st_size > 10000  # the comparison as one picture

    second = _run([str(BIN / "dvc"), "repro"], repo, env)
    assert "didn't change, skipping" in second or "up to date" in second
    status = _run([str(BIN / "dvc"), "status"], repo, env)
    assert "up to date" in status


def test_cli_help_lists_one_subcommand_per_stage(capsys):
    parser = build_parser()
    help_text = parser.format_help()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in stages:
        assert f"    {stage} " in help_text


def test_retrain_flow_reproduces_and_promotes_only_a_model_that_is_not_worse(dvc_repo, monkeypatch):
    """The Prefect retrain flow (Prefect's test harness) on the repo above: new parameters -> `dvc repro` runs
    pretrain + evaluate, the model is promoted; a promoted model that was better is kept."""
    from prefect.testing.utilities import prefect_test_harness

    sys.path.insert(0, str(ROOT))
    from flows.retrain import retrain_flow

    repo, env = dvc_repo
    monkeypatch.setenv("PATH", env["PATH"])
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["pretrain"]["max_steps"] = 4
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    with prefect_test_harness(server_startup_timeout=90):
        first = retrain_flow(str(repo))
        assert first["promoted"] and first["new"]["encoder_step"] == 4, first
        assert (repo / "models" / "promoted" / "encoder.pt").exists()
        promoted = repo / "models" / "promoted" / "evaluate.json"
        better = json.loads(promoted.read_text())
        better["f1_mean"] = 0.99  # pretend the promoted model was far better
        promoted.write_text(json.dumps(better))
        second = retrain_flow(str(repo))
        assert not second["promoted"] and "below the promoted model's 0.990" in second["reason"]
        assert json.loads(promoted.read_text())["f1_mean"] == 0.99
