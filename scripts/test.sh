#!/usr/bin/env bash
# Install what the tests need, lint, and run the default test suite (no GPU, no shared datasets).
# Extra pytest arguments pass through, e.g. `bash scripts/test.sh -m data` for the real-data tests.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet torch==2.14.1
python3 -m pip install --quiet -e ".[test]"

python3 -m ruff check src tests benchmarks
python3 -m ruff format --check src tests benchmarks
python3 -m pytest -p no:cacheprovider "$@"
