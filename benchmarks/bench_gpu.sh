#!/usr/bin/env bash
# Train a suite's candidates on the GPUs of one host, in parallel (one process per model, or per
# model and fold, spread round robin over the GPUs), then score them with `abyssal bench run`
# (through benchmarks/bench_suites.py) on the first GPU. Used on the lent H200 machines:
#   bash benchmarks/bench_gpu.sh nodule-lidc .devdata [extra training overrides...]
# Leaves the leaderboard in benchmarks/results/bench/<suite>/ and logs in $OUT (or /tmp).
set -euo pipefail
suite=$1; datasets=$2; shift 2
out=${OUT:-/tmp}
home=${BENCH_HOME:-/tmp/bench-home}
gpus=$(nvidia-smi -L | wc -l)
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
overrides=(); for o in "$@"; do overrides+=(--override "$o"); done
jobs=$(python3 - "$suite" <<'PY'
import sys
sys.path.insert(0, "benchmarks")
from bench_suites import CANDIDATES
for c in CANDIDATES[sys.argv[1]]:
    for k in (range(c.folds) if c.folds else [None]):
        print(c.name if k is None else f"{c.name}:{k}")
PY
)
i=0; pids=()
for job in $jobs; do
  name=${job%%:*}; fold=${job#*:}; [ "$fold" = "$job" ] && fold=""
  gpu=$((i % gpus)); i=$((i + 1))
  args=(--suites "$suite" --only "$name" --datasets "$datasets" --home "$home" --device cuda
        --train-only "${overrides[@]}")
  [ -n "$fold" ] && args+=(--fold "$fold")
  CUDA_VISIBLE_DEVICES=$gpu python3 benchmarks/bench_suites.py "${args[@]}" \
    > "$out/train-$name-${fold:-all}.log" 2>&1 &
  pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ "$failed" = 0 ] || { echo "a training failed; see $out/train-*.log" >&2; tail -5 "$out"/train-*.log >&2; exit 1; }
CUDA_VISIBLE_DEVICES=0 python3 benchmarks/bench_suites.py --suites "$suite" --datasets "$datasets" \
  --home "$home" --device cuda "${overrides[@]}"
