#!/usr/bin/env bash
# Set up, then run the linter, the store agent's tests in a virtualenv with no extras
# (scripts/test-agent-alone.sh), and the whole test suite (real broker, Spark, Delta).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
scripts/test-agent-alone.sh
exec .venv/bin/python -m pytest --durations=25 "$@"  # the slowest tests, to keep the suite in budget
