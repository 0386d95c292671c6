#!/usr/bin/env bash
# Install abyssal and take the fraud solution from data to a served, monitored model on
# SYNTHETIC data: generate -> pipeline (validate -> train -> performance test -> gate -> deploy)
# -> score new transactions and print fraud rings -> serve `production` with a monitor and an
# alert webhook that starts the pipeline -> replay normal, then drifted traffic, and watch the
# alert fire and the pipeline start. Everything lands in ./demo and in $ABYSSAL_HOME
# (default ~/.abyssal); the report is $ABYSSAL_HOME/pipelines/fraud/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet torch==2.14.1
python3 -m pip install --quiet -e ".[fraud,optimize,serve]"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
PORT=${PORT:-8765}
HOOK_PORT=${HOOK_PORT:-9095}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

step "1/5 generate synthetic transactions with planted fraud rings"
abyssal generate fraud --out demo

step "2/5 pipeline: validate the data, train (GAT + temporal features), time it, gate, deploy"
abyssal pipeline run pipelines/fraud.yaml

step "3/5 score new transactions one by one against the live graph; print the rings"
abyssal predict fraud --input demo/new_transactions.csv --out demo/scores.csv --top 3

step "4/5 serve fraud:production with a monitor; alerts go to a webhook that starts the pipeline"
rm -rf demo/serve-state
abyssal pipeline webhook pipelines/fraud.yaml --port "$HOOK_PORT" > demo/webhook.log 2>&1 &
pids+=($!)
abyssal serve fraud:production --port "$PORT" --state-dir demo/serve-state --monitor \
  --monitor-ignore timestamp,latency_ms --alert-every-s 2 \
  --alert-webhook "http://127.0.0.1:$HOOK_PORT/alerts" > demo/serve.log 2>&1 &
pids+=($!)
for _ in $(seq 120); do
  python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/readyz')" \
    2>/dev/null && break
  sleep 1
done
echo "serving on http://127.0.0.1:$PORT (metrics: /metrics, monitor: /v1/monitor)"

step "5/5 replay 500 new transactions, then 546 with amounts x40 (drifted)"
python3 scripts/replay.py demo/new_transactions.csv --url "http://127.0.0.1:$PORT" --model fraud \
  --rows 0:500
python3 scripts/replay.py demo/new_transactions.csv --url "http://127.0.0.1:$PORT" --model fraud \
  --rows 500: --scale amount=40
sleep 5  # the monitor checks every 2 s and posts what started firing
echo
echo "the webhook's log (demo/webhook.log):"
grep -E "firing|resolved|started|running|cooling" demo/webhook.log || echo "  no alert reached it"
for _ in $(seq 300); do  # the run it started (the data did not change: every step is skipped)
  python3 -c "import json, sys, urllib.request as u
sys.exit(json.load(u.urlopen('http://127.0.0.1:$HOOK_PORT/healthz'))['running'])" && break
  sleep 1
done
abyssal pipeline show fraud | grep -E '^fraud|^records|skipped' | head -4
echo
echo "report: ${ABYSSAL_HOME:-$HOME/.abyssal}/pipelines/fraud/report.html"
echo "serve it yourself: abyssal serve fraud:production --monitor --monitor-ignore timestamp,latency_ms"
