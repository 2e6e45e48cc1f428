#!/usr/bin/env bash
# The GPU checks of issue 4 in one run (about 6 minutes on one H200): step rates of every method in the GPU profile
# (resnet18, 112 px, 64 clips x 8 frames) and in the CPU profile, the profiler's top operators of a clp step, and
# the whole `clpau pretrain` loop (Fabric, loader workers, checkpoints, dvclive) for STEPS steps with crop and colour
# jitter on the trainer (the GPU default), with only the colour there, and with both in the loader. Each part's
# output is a file in $OUT (default reports/gpu); a part that fails is reported and the next one runs. The clip store
# (issue 32): `store` (write rate, decode rates: nvjpeg on the device against libjpeg-turbo on a core) and
# `loop_store` (the loop reading the JPEG store, decoding on the device), to set beside `loop_crop`. PARTS picks
# parts (default all: bench bench_cpu_profile profile loop_crop loop_trainer loop_loader store loop_store).
# Issue 32's check alone, about 3 minutes: PARTS="loop_crop store loop_store" bash bench/gpu.sh
#
#   python bench/gpu_pack.py     # here, once: .gpu/ = a slice of data/clips/synth_pretrain (+ wheels, see there)
#   bash bench/gpu.sh            # there, from the repo root (carry .gpu along)
#
# A dry run of the script on a CPU, on tiny batches: DEVICE=cpu BATCH=2 SIZE=64 STEPS=20 ROUNDS=1 bash bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-reports/gpu}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-300}
ROUNDS=${ROUNDS:-5}
BATCH=${BATCH:-64}
SIZE=${SIZE:-112}
PY=${PYTHON:-python3}
PARTS=" ${PARTS:-bench bench_cpu_profile profile loop_crop loop_trainer loop_loader store loop_store} "
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
if [ -d .gpu/wheels ] && ! $PY -c "import dvclive, lightning_fabric, pydantic" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/clpau-site \
    .gpu/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/clpau-site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
failed=()
part() {  # part NAME COMMAND...: run, keep its output in $OUT/NAME.txt, remember a failure
  local name=$1; shift
  [[ "$PARTS" == *" $name "* ]] || return 0
  echo "== $name: $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  [ "$rc" = 0 ] || failed+=("$name")
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.get_num_threads(), 'threads')"
  nproc; } > "$OUT/machine.txt" 2>&1
gpu=(--device "$DEVICE" --backbone resnet18 --image-size "$SIZE" --batch-clips "$BATCH")
part bench "$PY" bench/pretrain.py "${gpu[@]}" --workers 8 --data .gpu/clips --rounds "$ROUNDS"
part bench_cpu_profile "$PY" bench/pretrain.py --device "$DEVICE" --no-loader --rounds "$ROUNDS"
part profile "$PY" bench/pretrain.py "${gpu[@]}" --no-loader --rounds 1 --steps 16 --profile clp

run=$(mktemp -d)
# the clip store (issue 32): .gpu/clips as JPEG frames in LitData chunks, its decode rates (nvjpeg on the device), and
# the loop reading it with decoding, crop and colour on the trainer (loop_store, against loop_crop's raw frames)
if [[ "$PARTS" == *" store "* || "$PARTS" == *" loop_store "* ]]; then
  "$PY" -m clpau store .gpu/clips --out "$run/store" --quiet > "$OUT/store_write.txt" 2>&1 || failed+=(store_write)
fi
part store "$PY" bench/store.py --data .gpu/clips --skip-train
declare -A COLOUR=([crop]=trainer [trainer]=trainer [loader]=loader [store]=trainer)
declare -A CROP=([crop]=trainer [trainer]=loader [loader]=loader [store]=trainer)
declare -A DATA=([crop]=$PWD/.gpu/clips [trainer]=$PWD/.gpu/clips [loader]=$PWD/.gpu/clips [store]=$run/store)
for where in crop trainer loader store; do
  [[ "$PARTS" == *" loop_$where "* ]] || continue
  mkdir -p "$run/$where"
  cat > "$run/$where/params.yaml" <<EOF
pretrain:
  data: [${DATA[$where]}]
  backbone: resnet18
  image_size: $SIZE
  batch_clips: $BATCH
  compute:
    num_workers: 8
    colour_on: ${COLOUR[$where]}
    crop_on: ${CROP[$where]}
  max_steps: $STEPS
  log_every: 10
EOF
  pushd "$run/$where" > /dev/null && part "loop_$where" "$PY" -m clpau pretrain --quiet; popd > /dev/null
  $PY - "$run/$where/dvclive/pretrain" >> "$OUT/loop_$where.txt" 2>&1 <<'EOF'
import csv, statistics, sys
from pathlib import Path
plots = Path(sys.argv[1]) / "plots" / "metrics"
def column(name):
    with open(plots / f"{name}.tsv") as f:
        rows = [float(row[name]) for row in csv.DictReader(f, delimiter="\t")]
    return rows[3:] if len(rows) > 5 else rows  # past warm-up and compiles
rate, wait = column("img_per_s"), column("loader_wait")
print(f"loop: median img/s {statistics.median(rate):.0f} (windows {min(rate):.0f}-{max(rate):.0f}), "
      f"median loader_wait {statistics.median(wait):.3f} (max {max(wait):.3f}), {len(rate)} windows of 10 steps")
EOF
done
echo "failed parts: ${failed[*]:-none}" | tee "$OUT/summary.txt"
[ ${#failed[@]} = 0 ]
