#!/usr/bin/env bash
# CIR with the warp decoder (issue 41; docs/results.md, "CIR that moves pixels"): clp with CIR's swap term and
# schedule varied on top of the default TCL reading, and TCL alone, each as a named DVC experiment run in the
# workspace (the checkpoint stays for the swap-fidelity check), then bench/cir_truth.py on it. (The pixel decoder's
# settings of issue 33 ran with this script as it was at commit 33d58f8.) One folder per run under $OUT: evaluate.json, pretrain.json, step.json (mean step time
# over the run, from DVCLive's img_per_s), truth/ (summary.json, pairs.png) and truth.md.
#
#   bash bench/cir_study.sh                                                  # the screen: seed 0, make repro's budget
#   SETTINGS="tcl clp" SEEDS="0 1 2" STEPS=1500 LR=0.002 bash bench/cir_study.sh   # the study's budget
#   SETTINGS="tcl clp" SEEDS="1 2" bash bench/cir_study.sh                         # make repro's, the other seeds
#
# Runs in the workspace and resets params.yaml before each run: use a clone (bench/clp_study.sh's note), not a
# checkout with changes of its own. Each run takes 9-13 min at 1000 steps on the 2-core AVX2-only EPYC (fp32).
set -euo pipefail
BIN=${BIN:-.venv/bin}
# the stages run `clpau`: the venv first on PATH; no telemetry (as in the Makefile)
export PATH="$(cd "$BIN" && pwd):$PATH" DO_NOT_TRACK=1 DVC_NO_ANALYTICS=1
OUT=${OUT:-reports/cir_study}
SEEDS=${SEEDS:-0}
STEPS=${STEPS:-1000}
LR=${LR:-0.004}
PAIRS=${PAIRS:-300}
# setting -> its overrides of params.yaml; every CIR setting trains clp (CIR's defaults: every 2nd step, 2 target
# frames a clip, the swap tied to A's frame by a cosine pull) whatever the default method is
CLP="-S pretrain.method=clp"
declare -A SETTING=(
  [tcl]="-S pretrain.method=tcl"
  [clp]="$CLP"
  [clp-contrast]="$CLP -S pretrain.cir.swap_loss=contrast"
  [clp-every1]="$CLP -S pretrain.cir.every=1"
  [clp-enc]="$CLP -S pretrain.cir.swap_trains=encoder"
  [clp-motion]="$CLP -S pretrain.cir.swap_flow=motion"
  [clp-motion-enc]="$CLP -S pretrain.cir.swap_flow=motion -S pretrain.cir.swap_trains=encoder"
)
SETTINGS=${SETTINGS:-tcl clp clp-contrast}
for name in $SETTINGS; do
  [[ -v "SETTING[$name]" ]] || { echo "cir_study: unknown setting '$name' (known: ${!SETTING[*]})" >&2; exit 2; }
done
for s in $SEEDS; do for name in $SETTINGS; do
  run="cir-$name-$STEPS-s$s"
  git checkout -q params.yaml
  "$BIN/dvc" exp remove -q "$run" 2>/dev/null || true
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$BIN/dvc" exp run -q -n "$run" -S pretrain.seed="$s" -S pretrain.max_steps="$STEPS" -S pretrain.lr="$LR" ${SETTING[$name]}
  mkdir -p "$OUT/$run"
  cp metrics/evaluate.json "$OUT/$run/evaluate.json"
  cp dvclive/pretrain/metrics.json "$OUT/$run/pretrain.json"
  # mean step time: DVCLive logs img/s over each 10-step window; the first (warm-up) window is left out
  "$BIN/python" - "$OUT/$run/step.json" "$(( $(date +%s) - start ))" <<'EOF'
import csv, json, sys
import yaml
p = yaml.safe_load(open("params.yaml"))["pretrain"]
rows = list(csv.DictReader(open("dvclive/pretrain/plots/metrics/img_per_s.tsv"), delimiter="\t"))[1:]
per_step = p["batch_clips"] * p["clip_len"]
ms = 1000 * per_step * sum(1 / float(r["img_per_s"]) for r in rows) / len(rows)
json.dump({"step_ms": ms, "wall_s": int(sys.argv[2]), "params": p}, open(sys.argv[1], "w"), indent=1)
print(f"mean step {ms:.1f} ms")
EOF
  if [[ "$name" != tcl ]]; then
    "$BIN/python" bench/cir_truth.py --pairs "$PAIRS" --out "$OUT/$run/truth" > "$OUT/$run/truth.md"
  fi
  echo "cir_study: $run done in $(( $(date +%s) - start )) s"
done; done
git checkout -q params.yaml
