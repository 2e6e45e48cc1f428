#!/usr/bin/env bash
# The CLP study (docs/results.md, "The study"): simclr, moco and readings of CLP's temporal contrast, each at the
# same corpus, backbone, budget (1500 steps) and linear probe, once per seed, as named DVC experiments
# (cmp-<reading>-s<seed>); then one table, reports/study.md (+ .png), mean ± std over seeds per reading.
#
#   bash bench/clp_study.sh                                  # every reading, seeds 0 1 2 (~6 min a run on 2 cores)
#   READINGS="clp-8x4 tcl-8x4" SEEDS="1 2" bash bench/clp_study.sh
#
# `dvc exp run` starts from HEAD: commit first, and do not commit while it runs (or run it in a clone).
set -euo pipefail
BIN=${BIN:-.venv/bin}
SEEDS=${SEEDS:-0 1 2}
# the study's protocol, whatever params.yaml's defaults have become since (900 steps at lr 4e-3 for `make repro`)
BUDGET="-S pretrain.max_steps=1500 -S pretrain.lr=0.002"
# reading -> its overrides of params.yaml (Δ, pos_window, neg_window count clip positions, not video frames)
declare -A READING=(
  [simclr]="-S pretrain.method=simclr"
  [moco]="-S pretrain.method=moco"
  [clp-8x1]="-S pretrain.method=clp -S pretrain.frame_stride=1 -S pretrain.tcl.key_encoder=momentum"                                  # (a) in-clip negatives, margin m(Δ)
  [clp-8x4]="-S pretrain.method=clp -S pretrain.frame_stride=4 -S pretrain.tcl.key_encoder=momentum"                                # (b) a 1.28 s clip
  [clp-tc-8x4]="-S pretrain.method=clp -S pretrain.frame_stride=4 -S pretrain.tcl.key_encoder=momentum -S pretrain.tcl.variant=time_contrast"  # (c)
  [clp-motion-8x4]="-S pretrain.method=clp -S pretrain.frame_stride=4 -S pretrain.tcl.key_encoder=momentum -S pretrain.tcl.margin_by=motion"       # (d)
  [clp-online-8x1]="-S pretrain.method=clp -S pretrain.frame_stride=1 -S pretrain.tcl.key_encoder=online"     # (e)
  [clp-online-8x4]="-S pretrain.method=clp -S pretrain.frame_stride=4 -S pretrain.tcl.key_encoder=online"     # (e)+(b)
  [clp-online-8x4-store]="-S pretrain.method=clp -S pretrain.frame_stride=4 -S pretrain.tcl.key_encoder=online -S pretrain.data=[data/store]"  # (e)+(b) from the JPEG clip store
  [tcl-online-8x4]="-S pretrain.method=tcl -S pretrain.frame_stride=4 -S pretrain.tcl.key_encoder=online"     # CIR off
  [tcl-8x4]="-S pretrain.method=tcl -S pretrain.frame_stride=4 -S pretrain.tcl.key_encoder=momentum"                                          # CIR off
)
READINGS=${READINGS:-simclr moco clp-8x1 clp-8x4 clp-tc-8x4 clp-motion-8x4 clp-online-8x1 clp-online-8x4 tcl-8x4 tcl-online-8x4}
for r in $READINGS; do
  [[ -n "${READING[$r]:-}" ]] || { echo "clp_study: unknown reading '$r' (known: ${!READING[*]})" >&2; exit 2; }
done
for s in $SEEDS; do for r in $READINGS; do
  "$BIN/dvc" exp remove -q "cmp-$r-s$s" 2>/dev/null || true
  # shellcheck disable=SC2086
  "$BIN/dvc" exp run --temp -q -n "cmp-$r-s$s" -S pretrain.seed="$s" $BUDGET ${READING[$r]}
done; done
"$BIN/clpau" compare --out reports/study.md
