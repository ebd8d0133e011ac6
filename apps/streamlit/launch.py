"""Starts the Streamlit dashboard as its own process (it never shares a JVM)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lakehouse.storage import lake_url

DASHBOARD = Path(__file__).with_name("dashboard.py")
SERVE = Path(__file__).with_name("serve.py")
"""``streamlit run`` with the pages' imports done before the server starts."""


def dashboard_command(lakehouse: str, port: int, users_file: str | None = None
                      ) -> list[str]:
    """``streamlit run`` for the dashboard on loopback (through :mod:`serve`, which
    imports what the pages need first); ``users_file`` defaults to the
    lakehouse's (see :func:`apps.auth.users.users_file_path`)."""
    extra = ["--users-file", str(Path(users_file).resolve())] if users_file else []
    return [sys.executable, str(SERVE), str(DASHBOARD),
            "--server.headless", "true", "--server.port", str(port),
            "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "viewer",
            "--", "--lakehouse", lake_url(lakehouse), *extra]


def run_dashboard(lakehouse: str, *, port: int = 8501, users_file: str | None = None) -> int:
    print(f"dashboard: http://127.0.0.1:{port}", flush=True)
    env = {**os.environ, "SHELFLIFE_LAKEHOUSE": lake_url(lakehouse)}
    return subprocess.call(dashboard_command(lakehouse, port, users_file), env=env)
