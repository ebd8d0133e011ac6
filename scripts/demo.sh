#!/usr/bin/env bash
# Set up, then run the whole demo: brokers, simulated fleet, ingest, streaming, dashboard.
# Secure brokers (logins in ./var/brokers/credentials.json); pass --insecure for open ones.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export SHELFLIFE_LAKEHOUSE=${SHELFLIFE_LAKEHOUSE:-./var/lakehouse}
exec .venv/bin/shelflife demo --data-dir ./var "$@"
