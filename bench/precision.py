"""Pretraining img/s in fp32 and bf16, on this CPU as it is and capped at AVX2 (an AVX2-only CPU's kernels).

    python bench/precision.py [--steps 30] [--method clp] [--precisions 32-true bf16-mixed] [--isa native avx2]
    python bench/precision.py --quality --seeds 0 1 2 --isa avx2 --precisions 32-true   # F1 of the whole budget

Each (ISA, precision) pair runs the real `clpau pretrain` loop (`run_pretrain`: loader in the training process,
Fabric, the default method and its params.yaml settings) for `--steps` steps in a subprocess of its own (the ISA
ceiling must be set before torch loads) into a temporary folder, and reports the median of the loop's own img/s
figures after the first logging window (dvclive's `img_per_s`, every 10 steps). Needs the pretraining clips
(`dvc repro extract@synth_pretrain`). Also prints what `precision: auto` picks under each ISA.

`--quality` trains params.yaml's whole budget (`pretrain.max_steps`) for each seed instead, evaluates each encoder
with `clpau evaluate`'s protocol (params.yaml's evaluate section) and reports F1 mean ± std over the seeds, so that
a precision's speed is never bought with accuracy unseen.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from clpau.core.hardware import AVX2_CAPS
from clpau.eval.scores import spread

CHILD = """
import json, sys
from pathlib import Path
from clpau.config import load_params
from clpau.core.hardware import resolve_precision
from clpau.train.pretrain import run_pretrain
out, steps, precision, method, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
params = load_params()
update = {"compute": params.pretrain.compute.model_copy(update={"precision": precision}), "method": method, "seed": seed, "out_dir": Path(out), "live_dir": Path(out) / "live",
          "ckpt_every": 10**6, "log_every": 10}
if steps:  # a speed run: a short schedule
    update.update(max_steps=steps, warmup_steps=5)
p = params.pretrain.model_copy(update=update)
result = {"auto": resolve_precision("auto", "cpu")[0], **run_pretrain(p, progress=False, log=lambda m: None)}
if not steps:
    from clpau.eval.evaluate import run_evaluate
    e = params.evaluate.model_copy(update={"encoder": Path(out) / "encoder.pt", "metrics": Path(out) / "eval.json",
                                           "plots_dir": Path(out) / "plots", "probe_out": Path(out) / "probe.pt"})
    m = run_evaluate(params.benchmark, e, p.data, progress=False, log=lambda m: None)
    result.update(f1_mean=m["f1_mean"], same_subject_nn=m.get("same_subject_nn"))
print(json.dumps(result))
"""


def run(isa: str, precision: str, steps: int, method: str, seed: int = 0) -> dict:
    """One run in a subprocess (steps 0: the whole budget, then evaluated)."""
    env = dict(os.environ, **(AVX2_CAPS if isa == "avx2" else {}))
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", CHILD, out, str(steps), precision, method, str(seed)], env=env,
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"precision: {isa} {precision} failed:\n{done.stderr[-3000:]}")
        info = json.loads(done.stdout.strip().splitlines()[-1])
        with open(Path(out) / "live/plots/metrics/img_per_s.tsv") as f:
            rates = [float(r["img_per_s"]) for r in csv.DictReader(f, delimiter="\t")]
    return {"isa": isa, "precision": precision, "auto": info["auto"], "img_per_s": statistics.median(rates[1:] or rates),
            "windows": [round(r) for r in rates], **{k: info[k] for k in ("f1_mean", "same_subject_nn") if k in info}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--method", default="clp")
    ap.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    ap.add_argument("--isa", nargs="+", default=["native", "avx2"], choices=["native", "avx2"])
    ap.add_argument("--quality", action="store_true", help="the whole budget per seed, evaluated (F1 mean ± std)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="with --quality")
    ap.add_argument("--out", type=Path, default=None, help="default: reports/precision[_quality].json")
    args = ap.parse_args()
    args.out = args.out or Path(f"reports/precision{'_quality' if args.quality else ''}.json")
    if args.quality:
        return quality(args)
    rows = []
    for isa in args.isa:
        for precision in args.precisions:
            r = run(isa, precision, args.steps, args.method)
            rows.append(r)
            print(f"  {isa:<7} {precision:<11} {r['img_per_s']:7.0f} img/s   (auto picks {r['auto']}; "
                  f"10-step windows {r['windows']})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"method": args.method, "steps": args.steps, "rows": rows}, indent=1) + "\n")
    return 0


def quality(args) -> int:
    rows = []
    for isa in args.isa:
        for precision in args.precisions:
            runs = [run(isa, precision, 0, args.method, seed) for seed in args.seeds]
            f1 = [r["f1_mean"] for r in runs]
            rows.append({"isa": isa, "precision": precision, "seeds": args.seeds, "f1": f1,
                         "f1_mean": statistics.mean(f1), "f1_std": spread(f1),
                         "img_per_s": [round(r["img_per_s"]) for r in runs]})
            print(f"  {isa:<7} {precision:<11} F1 {statistics.mean(f1):.3f} ± {spread(f1):.3f} "
                  f"({' '.join(f'{v:.3f}' for v in f1)}), img/s {rows[-1]['img_per_s']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"method": args.method, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
