#!/usr/bin/env bash
# Install abyssal and run the fraud solution end to end on SYNTHETIC data:
# generate -> train (GAT + temporal features, tree baselines) -> evaluate -> register and promote
# -> score new transactions against the live graph -> print fraud rings -> optimize the model for
# this CPU (compiled and ONNX Runtime candidates measured against it; only a faster one is kept).
# Everything lands in ./demo and in $ABYSSAL_HOME (default ~/.abyssal).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet torch==2.14.1
python3 -m pip install --quiet -e ".[fraud,optimize]"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/6 generate synthetic transactions with planted fraud rings"
abyssal generate fraud --out demo

step "2/6 train: GAT + temporal features, and gradient-boosted tree baselines on the same splits"
abyssal train fraud --config configs/fraud/quickstart.yaml --alias candidate

step "3/6 evaluate the registered version and promote it to production"
abyssal evaluate fraud:candidate
abyssal models alias fraud:candidate production
abyssal models list fraud

step "4/6 score new transactions one by one against the live graph; print the rings"
abyssal predict fraud --input demo/new_transactions.csv --out demo/scores.csv --top 5

step "5/6 optimize for this CPU: compiled and ONNX Runtime candidates, measured against the model"
abyssal optimize fraud:candidate --target cpu --methods compile,onnx --batch-sizes 1 --reps 30

step "6/6 done"
echo "scores: demo/scores.csv; planted rings (ground truth): demo/planted_rings.json"
