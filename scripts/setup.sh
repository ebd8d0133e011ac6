#!/usr/bin/env bash
# Sets up Shelflife on a fresh Debian/Ubuntu machine with Python 3.11+ and Java 17:
# mosquitto (required; installed when we may install packages), a virtualenv in .venv,
# the package with its server and dev extras. Safe to run again; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" - <<'PYEOF' || { echo "setup: Python 3.11+ is required" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PYEOF
if ! command -v java >/dev/null 2>&1; then
  echo "setup: Java 17 is required for Spark (apt-get install -y openjdk-17-jre-headless)" >&2
  exit 1
fi

# apt_install PACKAGE FALLBACK: install a Debian package as root or with password-less
# sudo; otherwise (or on failure) say what Shelflife does without it.
apt_install() {
  local pkg=$1 fallback=$2 sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo"
    else
      echo "setup: $pkg not installed and no root; $fallback"
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: $pkg not installed and no apt-get; $fallback"
    return 0
  fi
  echo "setup: installing $pkg"
  ($sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq "$pkg" >/dev/null) \
    || echo "setup: could not install $pkg; $fallback"
}

have_mosquitto() { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; }
if ! have_mosquitto; then
  apt_install mosquitto "install it yourself"
  if ! have_mosquitto; then
    echo "setup: mosquitto is required: the regional brokers are mosquitto" \
         "(apt-get install mosquitto)" >&2
    exit 1
  fi
fi
# The Debian package starts a system mosquitto on 1883; Shelflife runs its own brokers.

# The dashboard's login test drives Debian's chromium through Playwright (no browser
# download); without it that test is skipped and everything else runs.
if [ ! -x /usr/bin/chromium ]; then
  apt_install chromium "the dashboard login test will be skipped"
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.shelflife-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[server,notebooks,dev]"
  touch "$stamp"
fi
echo "setup: ready (.venv)"
