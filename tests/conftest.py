"""Session fixtures: real brokers, a real Spark with Delta, free ports."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.brokers import RunningBroker, find_mosquitto, start_brokers, stop_brokers
from lakehouse.contract import REGIONS
from tests.ports import free_port
from tests.s3 import fresh_lake, moto_server


@pytest.fixture
def region_ports() -> dict[str, int]:
    return {r: free_port() for r in REGIONS}


@pytest.fixture
def brokers(tmp_path: Path, region_ports: dict[str, int]) -> Iterator[list[RunningBroker]]:
    """One mosquitto per region."""
    running = start_brokers(tmp_path / "brokers", REGIONS, ports=region_ports)
    yield running
    stop_brokers(running)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback for the whole session, with the AWS settings of this
    process pointed at it and the test bucket made (``tests.s3``)."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_lake(s3_endpoint: str) -> str:
    """A fresh ``s3://`` lakehouse prefix on the session's S3 server."""
    return fresh_lake()


@pytest.fixture(scope="session")
def spark(s3_endpoint: str):
    """A local Spark with Delta and ``s3a`` (reaching the session's S3 server), shared by
    the whole session (startup is the slow part)."""
    from spark_jobs.spark import spark_session

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = spark_session("shelflife-tests", lakehouse=fresh_lake())
    yield session
    session.stop()


def pytest_configure(config: pytest.Config) -> None:
    """The tests run against the real broker: without mosquitto they stop, they do not
    skip their way to a green run."""
    if find_mosquitto() is None:
        raise pytest.UsageError("mosquitto is not installed: apt-get install mosquitto "
                                "(scripts/setup.sh does it)")
