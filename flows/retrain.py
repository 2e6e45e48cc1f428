"""Prefect flow: retrain — `dvc repro` of the pretrain and evaluate stages (Lightning Fabric picks the worker's
accelerator: `pretrain.accelerator: auto`), then promote the new model only if it is not worse than the promoted one.

A thin wrapper over `clpau.retrain`; one run at a time per workspace (a lock file, and `concurrency_limit: 1` on the
`retrain-weekly` deployment in prefect.yaml). Run once with `python flows/retrain.py [--workspace .]`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from clpau import retrain


@task(name="dvc-repro")
def repro(workspace: Path, targets: list[str]) -> str:
    return retrain.dvc_repro(workspace, targets)


@flow(name="retrain", log_prints=True)
def retrain_flow(workspace: str = ".", targets: list[str] | None = None, tolerance: float = 0.005) -> dict:
    """Reproduce pretrain + evaluate, compare with the promoted model, promote when not worse."""
    log = get_run_logger()
    ws = Path(workspace).resolve()
    with retrain.workspace_lock(ws):
        targets = targets or retrain.default_targets(ws)
        output = repro(ws, targets)
        log.info(output[-2000:])
        result = retrain.promote_if_better(ws, tolerance)
    new, old = result["new"], result["old"]
    lines = [f"# Retrain: {'promoted' if result['promoted'] else '**not promoted**'}", "",
             f"- new model: {new['method']}, mean F1 {new['f1_mean']:.3f} ± {new['f1_std']:.3f}, identity leakage "
             f"{new['identity_leakage']:.3f}"]
    if old:
        lines.append(f"- promoted before: mean F1 {old['f1_mean']:.3f} (tolerance {tolerance})")
    lines.append(f"- {result['reason']}")
    create_markdown_artifact("\n".join(lines), key="retrain-summary")
    create_table_artifact([{"AU": au, "new F1": f1, "promoted F1": (old or {}).get("f1", {}).get(au)}
                           for au, f1 in new["f1"].items()], key="retrain-per-au-f1")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", default=".")
    args = ap.parse_args()
    print(retrain_flow(args.workspace))
