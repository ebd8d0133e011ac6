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
def spark():
    """A local Spark with Delta, shared by the whole session (startup is the slow part)."""
    from spark_jobs.spark import spark_session

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = spark_session("shelflife-tests")
    yield session
    session.stop()


def pytest_configure(config: pytest.Config) -> None:
    """The tests run against the real broker: without mosquitto they stop, they do not
    skip their way to a green run."""
    if find_mosquitto() is None:
        raise pytest.UsageError("mosquitto is not installed: apt-get install mosquitto "
                                "(scripts/setup.sh does it)")
