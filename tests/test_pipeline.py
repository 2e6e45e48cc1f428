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
    params["pretrain"].update(max_steps=3, batch_clips=2, clip_len=4, log_every=1)
    params["evaluate"].update(seeds=1, label_fractions=[0.5, 1.0], embedding_frames=100)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "DO_NOT_TRACK": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    _run(["git", "init", "-q"], repo, env)
    _run([str(BIN / "dvc"), "init", "-q"], repo, env)
    # the pool of accepted batches starts with its README only, versioned (as `make repro` has it)
    _run(["make", "-s", "-f", str(ROOT / "Makefile"), "pool"], repo, env)
    _run([str(BIN / "dvc"), "add", "-q", "data/pool"], repo, env)
    # a repo with a commit, as users have it (dvclive 3.49 fails on a repo without one)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "init"], repo, env)
    printed = _run([str(BIN / "dvc"), "repro"], repo, env)
    assert "is empty" not in printed, "the main job warns of an empty folder"
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
    assert set(lock["stages"]) == {"assets", "synth", "extract@samples", "extract@synth_pretrain", "trainset",
                                   "extract@synth_labelled", "validate@samples", "validate@synth_pretrain",
                                   "pretrain", "floor", "evaluate"}
    assert not (repo / "data" / "store").exists()  # the default reads the shards: no store is encoded for nothing
    assert (repo / "models" / "encoder.pt").exists()
    # the main job leaves a clean pipeline: every output as dvc.lock records it
    assert "Data and pipelines are up to date" in _run([str(BIN / "dvc"), "status"], repo, env)
    metrics = json.loads(_run([str(BIN / "dvc"), "metrics", "show", "--json"], repo, env))
    shown = json.dumps(metrics)
    assert '"loss"' in shown and '"f1_mean"' in shown and '"identity_leakage"' in shown
    evaluation = json.loads((repo / "metrics" / "evaluate.json").read_text())
    method = yaml.safe_load((repo / "params.yaml").read_text())["pretrain"]["method"]  # the default, tcl
    assert evaluation["method"] == method and 0 <= evaluation["f1_mean"] <= 1 and len(evaluation["f1"]) == 12
    # the floor beside the result: the random-init encoder of the same architecture, probed the same way
    floor = json.loads((repo / "metrics" / "floor.json").read_text())
    assert floor["backbone"] == "resnet_small" and floor["seed"] == 0
    assert evaluation["random_init"]["f1_mean"] == floor["f1_mean"]
    assert set(evaluation["random_init"]) >= {"f1_mean", "same_subject_nn", "cross_subject_knn_f1"}
    for png in ("per_au_f1.png", "label_efficiency.png", "embedding.png"):
        assert (repo / "metrics" / "evaluate" / png).stat().st_size > 5000
    assert (repo / "models" / "probe.pt").exists()

    # methods are compared as DVC experiments; `clpau compare` makes one table of them
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "pipeline"], repo, env)
    _run([str(BIN / "dvc"), "exp", "run", "--temp", "-n", "cmp-random", "-S", "pretrain.method=random"], repo, env)
    table = _run([str(BIN / "clpau"), "compare", "--out", "compare.md"], repo, env)
    summary, runs = table.split("## F1 per AU")[0], table.split("## Runs")[1]
    rows = [line for line in summary.splitlines() if line.startswith(("| random |", f"| {method} |"))]
    assert len(rows) == 2 and rows[0].startswith("| random | 0 |"), table  # one row per method, in ORDER
    assert "| random | 0 | cmp-random |" in runs and f"| {method} | 0 | workspace |" in runs, table
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


def _exp_show(repo, env) -> list:
    return json.loads(_run([str(BIN / "dvc"), "exp", "show", "--json", "--all-commits"], repo, env))


def _rows(states: list) -> dict:
    """{experiment name or rev: (trainset metrics, f1_mean)} of every state of `dvc exp show --json`."""
    out = {}

    def visit(state):
        data = state.get("data") or {}
        metrics = data.get("metrics") or {}
        trainset = ((metrics.get("metrics/trainset.json") or {}).get("data") or {}).get("trainset")
        f1 = ((metrics.get("metrics/evaluate.json") or {}).get("data") or {}).get("f1_mean")
        out[state.get("name") or state.get("rev")] = (trainset, f1)
        for group in state.get("experiments") or []:
            for rev in group.get("revs") or []:
                visit(rev)

    for state in states:
        visit(state)
    return out


def test_retraining_loop_across_two_clones(dvc_repo, batches, harness, tmp_path, monkeypatch):
    """Clone A (ingest side) accepts a synthetic batch into the pool and pushes it to a local DVC remote + a bare
    git origin; clone B (training side) pulls, retrains as a named DVC experiment whose training set holds the
    batch's clips, promotes it with lineage and pushes; a second retrain without new data does nothing; A pulls and
    sees the promoted model and its `dvc exp show` row; a batch with an evaluation subject's video, a video
    accepted before and a video named as an evaluation subject is refused. Prefect's test harness runs both flows."""
    sys.path.insert(0, str(ROOT))
    from clpau.ops import sync
    from flows.ingest import build_flow
    from flows.retrain import retrain_flow

    a, env = dvc_repo
    for key in ("PATH", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(key, env[key])
    dvc, git = str(BIN / "dvc"), "git"
    params = yaml.safe_load((a / "params.yaml").read_text())
    params["flows"]["git_remote"] = "origin"
    (a / "params.yaml").write_text(yaml.safe_dump(params))
    _run([git, "init", "-q", "--bare", str(tmp_path / "origin.git")], tmp_path, env)
    _run([git, "remote", "add", "origin", str(tmp_path / "origin.git")], a, env)
    _run([dvc, "remote", "add", "-d", "storage", str(tmp_path / "storage")], a, env)
    _run([git, "add", "-A"], a, env)
    _run([git, "commit", "-qm", "remotes"], a, env)
    _run([dvc, "push", "-q"], a, env)
    _run([git, "push", "-q", "-u", "origin", "HEAD"], a, env)
    good = sorted(batches["good"][0].glob("*.mp4"))[:3]
    monkeypatch.chdir(a)
    # A: the batch lands in the pool, versioned, committed and pushed
    shutil.copytree(batches["good"][0], a / "data" / "inbox", ignore=lambda d, names: [
        n for n in names if n.endswith(".mp4") and n not in {v.name for v in good}])
    accepted = build_flow("params.yaml")("params.yaml", "b1")
    assert accepted["accepted"], accepted["reasons"]
    # the tiny repo's training set (2 videos) is below drift.min_reference_videos: not judged, not held for it
    assert not any("drift" in r for r in accepted["reasons"])
    batch = json.loads((a / "data" / "pool" / "b1" / "batch.json").read_text())
    assert batch["videos"] == [v.name for v in good] and batch["clips"] > 0
    assert _run([git, "log", "-1", "--format=%s"], a, env).startswith("ingest: accept batch b1")
    assert accepted["shared"] == ["dvc push", "git push"]
    assert _run([git, "rev-parse", "HEAD"], a, env) == _run([git, "ls-remote", "origin", "HEAD"], a, env).split()[0] + "\n"

    # B: a second checkout pulls, retrains on base corpus + b1 as a named experiment, promotes, pushes
    b = tmp_path / "b"
    _run([git, "clone", "-q", str(tmp_path / "origin.git"), str(b)], tmp_path, env)
    first = retrain_flow(str(b))
    assert first["ran"] and first["promoted"], first
    name = first["experiment"]
    trainset = json.loads((b / "metrics" / "trainset.json").read_text())["trainset"]
    base = json.loads((a / "data" / "trainset" / "composition.json").read_text())["total"]["clips"]
    assert trainset["batches"] == 1 and trainset["clips"] == base + batch["clips"], (trainset, base, batch)
    lineage = json.loads((b / "models" / "promoted" / "lineage.json").read_text())
    assert lineage["experiment"] == name and lineage["trainset"]["batches"] == ["b1"]
    assert lineage["data"]["pool"] == yaml.safe_load((b / "data" / "pool.dvc").read_text())["outs"][0]["md5"]
    assert lineage["figures"]["f1_mean"] == first["new"]["f1_mean"]
    assert (b / "models" / "promoted" / "trainset" / "clips.parquet").exists()
    assert _rows(_exp_show(b, env))[name][0]["clips"] == trainset["clips"]
    assert first["shared"] == ["dvc push", "git push", f"dvc exp push {name}"]

    again = retrain_flow(str(b))
    assert not again["ran"] and "no new accepted data" in again["reason"], again
    assert _run([dvc, "exp", "list", "--all-commits", "--name-only"], b, env).split().count(name) == 1

    # A: pulls the promotion and sees it
    assert sync.pull(a, "origin") == ["git pull", "dvc pull"]
    assert json.loads((a / "models" / "promoted" / "lineage.json").read_text())["experiment"] == name
    _run([dvc, "exp", "pull", "-q", "origin", name], a, env)
    rows = _rows(_exp_show(a, env))
    assert rows[name][0]["batches"] == 1 and rows["workspace"][0]["batches"] == 1, rows

    # A: a batch that would bring an evaluation subject into pretraining (or repeat b1) is refused
    inbox = a / "data" / "inbox"
    inbox.mkdir(exist_ok=True)
    shutil.copy(a / "data" / "raw" / "synth" / "labelled" / "S001_T1.mp4", inbox / "lab_visit.mp4")
    shutil.copy(good[0], inbox / "again.mp4")
    shutil.copy(sorted(batches["good"][0].glob("*.mp4"))[3], inbox / "S002_visit.mp4")
    refused = build_flow("params.yaml")("params.yaml", "b2")
    assert not refused["accepted"] and not (a / "data" / "pool" / "b2").exists()
    reasons = " | ".join(refused["reasons"])
    assert "lab_visit.mp4 is the labelled benchmark's video S001_T1" in reasons, reasons
    assert "S002_visit.mp4 is named as the labelled benchmark's evaluation subject S002" in reasons, reasons
    assert "again.mp4 came into the pool with batch b1" in reasons, reasons
    # ... each video with its own reasons, and no release can put the evaluation subject's video into the pool
    assert sorted(refused["quarantined_videos"]) == ["S002_visit.mp4", "again.mp4", "lab_visit.mp4"]
    from clpau.config import load_params
    from clpau.ops.ingest import ReleaseError, release

    p = load_params(a / "params.yaml")
    with pytest.raises(ReleaseError, match="lab_visit.mp4 is the labelled benchmark's video S001_T1"):
        release(p.flows.quarantine, p.trainset.pool, "b2", ["lab_visit.mp4"], "t", "looks fine", p.benchmark)
    assert not list((a / "data" / "pool").glob("b2*"))
    assert (a / "data" / "quarantine" / "b2" / "videos" / "lab_visit.mp4").exists()
