"""A real S3 API for the tests: moto's server on loopback, one per test session.

The server is an HTTP endpoint like any S3: boto3, delta-rs (object_store) and Spark's
``s3a`` reach it through ``AWS_ENDPOINT_URL``, so the code under test runs exactly as it
would against a bucket elsewhere, conditional PUTs included. Nothing of Shelflife's is
mocked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lakehouse import storage
from tests.ports import free_port

BUCKET = "shelflife-test"

AWS_ENV = {"AWS_ACCESS_KEY_ID": "shelflife-test", "AWS_SECRET_ACCESS_KEY": "shelflife-test",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def moto_server(log_path: Path | None = None) -> Iterator[str]:
    """Start moto's S3 server, point the AWS settings of this process (and the processes
    it starts) at it, make the test bucket; yields the endpoint URL.

    The server runs in a process of its own, not as ``ThreadedMotoServer`` in the test's:
    delta-rs holds the GIL during some calls (``is_deltatable``), and a server thread in
    the same interpreter then never answers them. The server logs one line per request;
    ``log_path`` keeps them (bench/commits.py counts requests per commit from it)."""
    port = free_port()
    log_file = (open(log_path, "w+b") if log_path  # noqa: SIM115 - closed at the end
                else tempfile.TemporaryFile())  # noqa: SIM115 - closed at the end
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")),
                               "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log_file, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                log_file.seek(0)
                raise RuntimeError("moto_server did not start: "
                                   + log_file.read()[-2000:].decode(errors="replace")
                                   ) from None
            time.sleep(0.1)
    saved = {k: os.environ.get(k) for k in (*AWS_ENV, "AWS_ENDPOINT_URL", "AWS_PROFILE")}
    os.environ.update(AWS_ENV, AWS_ENDPOINT_URL=endpoint)
    os.environ.pop("AWS_PROFILE", None)
    storage.s3_settings.cache_clear()
    try:
        storage.check_bucket(f"s3://{BUCKET}", create=True)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log_file.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        storage.s3_settings.cache_clear()


def fresh_lake() -> str:
    """A new, empty lakehouse prefix in the test bucket."""
    return f"s3://{BUCKET}/lake-{uuid.uuid4().hex[:10]}"
