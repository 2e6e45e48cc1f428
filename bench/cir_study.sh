#!/usr/bin/env bash
# CIR at the strength it needs (issue 33 §2; docs/results.md, "CIR at the strength it needs"): clp with CIR's
# schedule, frames, decoder resolution and weights varied on top of the default TCL reading, and TCL alone, each as a
# named DVC experiment run in the workspace (the checkpoint stays for the swap-fidelity check), then
# bench/cir_truth.py on it. One folder per run under $OUT: evaluate.json, pretrain.json, step.json (mean step time
# over the run, from DVCLive's img_per_s), truth/ (summary.json, pairs.png) and truth.md.
#
#   bash bench/cir_study.sh                                                       # the screen: seed 0, 900 steps
#   SETTINGS="tcl every16" SEEDS="0 1 2" STEPS=1500 LR=0.002 bash bench/cir_study.sh   # the study's budget
#   SETTINGS=tcl SEEDS="0 1 2" STEPS=1000 bash bench/cir_study.sh                      # make repro's default
#
# Runs in the workspace and resets params.yaml before each run: use a clone (bench/clp_study.sh's note), not a
# checkout with changes of its own. Each run takes 3-5 min on 2 cores at 900 steps, 5.5-7.5 min at 1500.
set -euo pipefail
BIN=${BIN:-.venv/bin}
# the stages run `clpau`: the venv first on PATH; no telemetry (as in the Makefile)
export PATH="$(cd "$BIN" && pwd):$PATH" DO_NOT_TRACK=1 DVC_NO_ANALYTICS=1
OUT=${OUT:-reports/cir_study}
SEEDS=${SEEDS:-0}
STEPS=${STEPS:-900}
LR=${LR:-0.004}
PAIRS=${PAIRS:-300}
# setting -> its overrides of params.yaml; every CIR setting trains clp (CIR's defaults: cir_every 16, cir_frames 2,
# decoder 32 px, λ 1/.5/.5/0) whatever the default method is
CLP="-S pretrain.method=clp"
declare -A SETTING=(
  [tcl]="-S pretrain.method=tcl"
  [every16]="$CLP"
  [every4]="$CLP -S pretrain.cir.every=4"
  [every1]="$CLP -S pretrain.cir.every=1"
  [every4-frames8]="$CLP -S pretrain.cir.every=4 -S pretrain.cir.frames=8"
  [every1-dec64]="$CLP -S pretrain.cir.every=1 -S pretrain.cir.decoder_size=64"
  [every1-id]="$CLP -S pretrain.cir.every=1 -S pretrain.cir.lambda_id=0.5"
  [every1-w1]="$CLP -S pretrain.cir.every=1 -S pretrain.cir.lambda_swap=1 -S pretrain.cir.lambda_cycle=1"
  [every4-id]="$CLP -S pretrain.cir.every=4 -S pretrain.cir.lambda_id=0.5"
)
SETTINGS=${SETTINGS:-tcl every16 every4 every1 every4-frames8 every1-dec64 every1-id every4-id every1-w1}
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
