"""The read API as other systems meet it: ``shelflife api`` in its own process on a free
port, a key made with ``shelflife api-keys add``, and plain HTTP requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.ports import free_port
from tests.served import served


def shelflife(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "apps.cli", *args], capture_output=True,
                          text=True, timeout=120, env=os.environ.copy())


def add_key(keys_file: Path, name: str) -> str:
    """A new key's token, as `shelflife api-keys add` prints it."""
    done = shelflife("api-keys", "add", name, "--keys-file", str(keys_file))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class Api:
    url: str
    token: str | None = None

    def get(self, path: str, token: Any = ...) -> tuple[int, Any]:
        """Status and decoded JSON (or text) of ``GET path``, with this API's token unless
        another (or None, for none) is given."""
        token = self.token if token is ... else token
        request = urllib.request.Request(self.url + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                status, body, kind = resp.status, resp.read(), resp.headers["content-type"]
        except urllib.error.HTTPError as exc:
            status, body, kind = exc.code, exc.read(), exc.headers["content-type"]
        return status, json.loads(body) if "json" in (kind or "") else body.decode()


@contextmanager
def served_api(lakehouse: str | Path, keys_file: Path, log: Path) -> Iterator[Api]:
    """``shelflife api`` on ``lakehouse`` until the block ends; waits for ``/healthz``."""
    api = Api(f"http://127.0.0.1:{free_port()}")
    cmd = [sys.executable, "-m", "apps.cli", "api", "--lakehouse", str(lakehouse), "--port",
           api.url.rsplit(":", 1)[1], "--keys-file", str(keys_file)]
    with served(cmd, log, lambda: api.get("/healthz", None)[0] == 200, "api",
                env=os.environ.copy()):
        yield api
