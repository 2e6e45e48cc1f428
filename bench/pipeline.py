"""Per-stage wall time of the default pipeline (`dvc repro`), on this CPU as it is and as an AVX2-only CPU.

    python bench/pipeline.py                      # every stage, forced, native ISA
    python bench/pipeline.py --avx2               # the same with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
    python bench/pipeline.py --stages pretrain evaluate --avx2 --out reports/pipeline_avx2.json

Each stage runs as `dvc repro --single-item --force STAGE` in this workspace (so its inputs must exist: run the
stages in order, or `dvc repro` once), one after another, after its persisted outputs are removed (extraction's
per-video cache and pretraining's checkpoints would otherwise turn a forced run into a no-op; `--warm` keeps them), and its seconds are printed and written as JSON with the
machine's CPU flags that matter (avx2, avx512f, avx512_bf16, amx_bf16), the ISA ceilings in force and the precision
that `pretrain.compute.precision: auto` resolves to under them. The emulation caps PyTorch and oneDNN only: dlib, NumPy and
the video codecs (synth, extract) run as they would natively.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from clpau.core.hardware import AVX2_CAPS, BF16_FLAGS, CpuInfo, resolve_precision

STAGES = ["assets", "synth", "extract@samples", "extract@synth_pretrain", "extract@synth_labelled",
          "validate@samples", "validate@synth_pretrain", "trainset", "pretrain", "evaluate"]
# what a stage keeps across `dvc repro --force` (persisted outputs: extraction's per-video cache, pretraining's
# checkpoints) and would reuse instead of working: removed first, so that each stage is timed as on a fresh clone
PERSISTED = {"extract@samples": ["data/clips/samples"], "extract@synth_pretrain": ["data/clips/synth_pretrain"],
             "extract@synth_labelled": ["data/clips/synth_labelled"],
             "pretrain": ["models/checkpoints", "dvclive/pretrain"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avx2", action="store_true", help="cap PyTorch and oneDNN at AVX2 (an AVX2-only CPU)")
    ap.add_argument("--stages", nargs="+", default=STAGES, help="stages to time, in this order")
    ap.add_argument("--warm", action="store_true", help="keep persisted outputs (per-video extraction cache, "
                                                        "checkpoints): times a rerun, not a fresh clone")
    ap.add_argument("--out", type=Path, help="JSON output (default: reports/pipeline_{native,avx2}.json)")
    args = ap.parse_args()
    env = dict(os.environ, **(AVX2_CAPS if args.avx2 else {}))
    cpu = CpuInfo.current(env)
    precision, why = resolve_precision("auto", "cpu", cpu)
    result = {"isa": "avx2 (emulated)" if args.avx2 else "native", "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(),
              "flags": sorted(cpu.flags & ({"avx2", "avx512f"} | BF16_FLAGS)),
              "env": {k: env[k] for k in AVX2_CAPS if k in env}, "auto_precision": precision, "why": why, "stages": {}}
    print(f"pipeline: {result['isa']}; auto precision {precision} ({why})", flush=True)
    for stage in args.stages:
        if not args.warm:
            for path in PERSISTED.get(stage, []):
                shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        run = subprocess.run(["dvc", "repro", "--single-item", "--force", stage], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - t0
        if run.returncode:
            print(run.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"pipeline: stage {stage} failed (exit {run.returncode})")
        result["stages"][stage] = round(seconds, 1)
        print(f"  {stage:<26} {seconds:7.1f} s", flush=True)
    result["total"] = round(sum(result["stages"].values()), 1)
    print(f"  {'total':<26} {result['total']:7.1f} s")
    out = args.out or Path("reports") / f"pipeline_{'avx2' if args.avx2 else 'native'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
