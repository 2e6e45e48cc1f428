"""The package's architecture (docs/architecture.md): its layers import only the layers below them (import-linter's
layers contract in pyproject.toml), and every DVC stage's code deps hold every module the stage runs, so a code
change can never leave a stage reported up to date."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
LINT = Path(sys.executable).with_name("lint-imports")
# the module each stage's subcommand runs (cli.py only dispatches to it)
STAGE_ENTRY = {
    "assets": "clpau.synth.assets",
    "synth": "clpau.synth.benchmark",
    "extract": "clpau.video.extract",
    "validate": "clpau.ops.validate",
    "trainset": "clpau.ops.trainset",
    "pretrain": "clpau.train.pretrain",
    "floor": "clpau.eval.floor",
    "evaluate": "clpau.eval.evaluate",
}
DISPATCH = {"clpau", "clpau.cli", "clpau.config", "clpau.__main__"}  # their changes reach a stage as its params


def _lint(src: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(src), "PATH": str(LINT.parent)})


def test_the_layers_import_only_downwards():
    run = _lint(SRC)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 kept, 0 broken" in run.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    # the check is real: the package with one module of the lowest layer importing the dispatcher fails it
    shutil.copytree(SRC / "clpau", tmp_path / "clpau", ignore=shutil.ignore_patterns("__pycache__"))
    fileio = tmp_path / "clpau" / "core" / "fileio.py"
    fileio.write_text(fileio.read_text() + "\n\ndef _upward():\n    from clpau.cli import main\n\n    return main\n")
    run = _lint(tmp_path)
    assert run.returncode != 0
    assert "clpau.core is not allowed to import clpau.cli" in run.stdout, run.stdout


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: (stage["do"] if "foreach" in stage else stage) for name, stage in stages.items()}


def test_every_stage_runs_one_known_subcommand():
    for name, stage in _stages().items():
        assert stage["cmd"].split()[:2] == ["clpau", name], f"stage {name}: {stage['cmd']}"
    assert set(_stages()) == set(STAGE_ENTRY)


def test_every_module_a_stage_runs_is_among_its_code_deps():
    graph = grimp.build_graph("clpau")
    for name, stage in _stages().items():
        entry = STAGE_ENTRY[name]
        code_deps = [ROOT / d for d in stage.get("deps", []) if str(d).startswith("src/")]
        modules = (graph.find_upstream_modules(entry) | {entry}) - DISPATCH
        missing = []
        for module in sorted(modules):
            path = SRC / (module.replace(".", "/") + ".py")
            path = path if path.exists() else path.with_suffix("") / "__init__.py"
            if not any(path == d or d in path.parents for d in code_deps):
                missing.append(str(path.relative_to(ROOT)))
        assert not missing, f"stage {name} runs modules its deps leave out: {missing}"
