#!/usr/bin/env bash
# Set up, then run the linter and the whole test suite (real broker, Spark, Delta).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
