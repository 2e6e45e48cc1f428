"""Pretraining img/s in fp32 and bf16, on this CPU as it is and capped at AVX2 (an AVX2-only CPU's kernels).

    python bench/precision.py [--steps 30] [--method clp] [--precisions 32-true bf16-mixed] [--isa native avx2]

Each (ISA, precision) pair runs the real `clpau pretrain` loop (`run_pretrain`: loader in the training process,
Fabric, the default method and its params.yaml settings) for `--steps` steps in a subprocess of its own (the ISA
ceiling must be set before torch loads) into a temporary folder, and reports the median of the loop's own img/s
figures after the first logging window (dvclive's `img_per_s`, every 10 steps). Needs the pretraining clips
(`dvc repro extract@synth_pretrain`). Also prints what `precision: auto` picks under each ISA.
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

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}

CHILD = """
import json, sys
from pathlib import Path
from clpau.config import load_params
from clpau.hardware import resolve_precision
from clpau.pretrain import run_pretrain
out, steps, precision, method = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
p = load_params().pretrain.model_copy(update={"max_steps": steps, "precision": precision, "method": method,
    "out_dir": Path(out), "live_dir": Path(out) / "live", "ckpt_every": 10**6, "log_every": 10, "warmup_steps": 5})
print(json.dumps({"auto": resolve_precision("auto", "cpu")[0], **run_pretrain(p, progress=False, log=lambda m: None)}))
"""


def run(isa: str, precision: str, steps: int, method: str) -> dict:
    env = dict(os.environ, **(AVX2 if isa == "avx2" else {}))
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", CHILD, out, str(steps), precision, method], env=env,
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"precision: {isa} {precision} failed:\n{done.stderr[-3000:]}")
        info = json.loads(done.stdout.strip().splitlines()[-1])
        with open(Path(out) / "live/plots/metrics/img_per_s.tsv") as f:
            rates = [float(r["img_per_s"]) for r in csv.DictReader(f, delimiter="\t")]
    return {"isa": isa, "precision": precision, "auto": info["auto"], "img_per_s": statistics.median(rates[1:] or rates),
            "windows": [round(r) for r in rates]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--method", default="clp")
    ap.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    ap.add_argument("--isa", nargs="+", default=["native", "avx2"], choices=["native", "avx2"])
    ap.add_argument("--out", type=Path, default=Path("reports/precision.json"))
    args = ap.parse_args()
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


if __name__ == "__main__":
    sys.exit(main())
