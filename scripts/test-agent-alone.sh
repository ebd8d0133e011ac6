#!/usr/bin/env bash
# The store agent on its own: a fresh virtualenv gets Shelflife with no extras (paho-mqtt
# only, as on a store's hardware) plus the test tools, and runs the agent's tests from a
# copy of tests/ so every import resolves to the installed package, not this checkout.
# Tests that need ingest or Spark carry the `server` marker and are left out here; the
# main suite runs them. Needs mosquitto (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PY=${PYTHON:-python3}

work=$(mktemp -d "${TMPDIR:-/tmp}/shelflife-agent-alone.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The test tools at the versions the dev extra pins, read from pyproject.toml.
mapfile -t tools < <("$PY" - <<'PYEOF'
import re, tomllib
dev = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]
wanted = {"pytest", "pytest-timeout", "hypothesis"}
print("\n".join(d for d in dev if re.split(r"[=<>!~ ]", d, maxsplit=1)[0] in wanted))
PYEOF
)

# Build from a copy of the files git knows (committed or not, never ignored ones), so no
# stale build/ folder can slip a removed module into the installed package.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf - | tar -C "$work/src" -xf -
# The set-up .venv's pip installs into the new virtualenv (no pip of its own to bootstrap),
# and pip's cache (~/.cache/pip) keeps the downloads to the first run.
if [ -x .venv/bin/python ]; then
  "$PY" -m venv --without-pip "$work/venv"
  pip=(.venv/bin/python -m pip --python "$work/venv/bin/python")
else
  "$PY" -m venv "$work/venv"
  pip=("$work/venv/bin/python" -m pip)
fi
"${pip[@]}" install -q --disable-pip-version-check "$work/src" "${tools[@]}"
for pkg in pyarrow pandas deltalake pyspark streamlit prometheus_client; do
  if "$work/venv/bin/python" -c "import $pkg" 2>/dev/null; then
    echo "agent-alone: $pkg is installed without any extra; the agent must not need it" >&2
    exit 1
  fi
done

cp -r tests "$work/tests"
cd "$work"
"$work/venv/bin/python" -m pytest -c "$repo/pyproject.toml" --rootdir "$work" \
  -p no:cacheprovider -m "not server" tests/edge_mqtt
