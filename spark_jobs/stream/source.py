"""A region's landing zone as a Spark streaming source whose offset names a batch's files.

Spark's text file source cost each region's query about 0.10 of a core over an idle JVM
at one trigger a second (``bench/trigger_cpu.py``): Hadoop lists the folder (over
``s3a`` several requests a trigger, 86-500 ms at the 90th percentile on the test S3),
plans a file scan, and logs every file it ever read in a metadata log that grows for as
long as the checkpoint lives. This source, a Python data source that Structured
Streaming drives like any other (offsets log, commit log, one-second trigger), cost
about 0.05 in the same measurement (README, *CPU per event*). Its offset is the list of
batch files a micro-batch takes, so:

* the batch reads exactly those files (``steps.batch_files_logged`` takes them from the
  query's ``offsets/<batch>``), on a local disk or S3, with no Spark job;
* a folder is listed with one ``scandir`` and an S3 prefix with one ``LIST`` (a page per
  thousand files) through boto3;
* files are deleted in :meth:`LandingReader.commit`, which Spark calls for a batch once
  it has logged the next one (so an idle region keeps its last batch's files until
  more arrive, as with ``cleanSource=delete``).

Batch names are not in arrival order (a restarted ingest publishes a batch it had
prepared before the crash under its old name), so "new" means *in no earlier batch's
offset*, never *after the last name*; files read but not yet deleted ride along in the
offsets (``pending``) until a commit deletes them, so no file is read twice.

A stream whose checkpoint Spark's file source wrote goes on from it with the same batch
numbering (the stream's recovery compares batch ids): the file source's offset
(``{"logOffset": N}``) names no files, so the first batch takes every batch file in the
zone, the last committed batch's not-yet-deleted files among them, once more. The fold
drops their events by seq; their dead letters, if they held any, are recorded twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.datasource import (
    DataSource,
    DataSourceStreamReader,
    InputPartition,
)
from pyspark.sql.streaming.datasource import ReadLimit, ReadMaxFiles

from lakehouse.landing import batch_names, delete_batches, read_batches
from lakehouse.storage import join

log = logging.getLogger(__name__)

SOURCE_FORMAT = "shelflife_landing"
OFFSET_FILES = "files"
"""The names of the batch's own files, in an offset of this source."""
OFFSET_PENDING = "pending"
"""The names of files read by earlier batches and still in the zone, in an offset."""
LIST_GRACE_S = 30.0
"""How long the zone's listing may keep failing before the query fails with the error."""


def offset_files(offset: dict[str, Any] | None, key: str = OFFSET_FILES) -> list[str] | None:
    """The batch file names an offset of this source holds under ``key`` (the batch's
    own, or ``pending``), or None when it is not one (an offset Spark's file source
    logged before the switch: ``{"logOffset": N}``)."""
    if not isinstance(offset, dict) or not isinstance(offset.get(key), list):
        return None
    return [str(n) for n in offset[key]]


class LandingPartition(InputPartition):
    """All of a micro-batch's files: a batch holds a few hundred lines, one task."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(urls)
        self.urls = urls


class LandingReader(DataSourceStreamReader):
    """Offsets, planning and clean-up of one region's landing zone (see the module doc).

    An offset holds the batch's files and the files read before it that may not be
    deleted yet (``pending``: the previous batches' files still listed). Spark deletes
    nothing itself: it calls :meth:`commit` for batch N only after it has logged batch
    N + 1, so a crash in between leaves N's files in the zone, and a delete may fail. The
    offset remembers them durably (in the offsets log), so they are never offered as new
    again, and every commit retries them."""

    def __init__(self, url: str, max_files: int, *, list_grace_s: float = LIST_GRACE_S
                 ) -> None:
        self.url = url
        self.max_files = max_files
        self.list_grace_s = list_grace_s
        self._failing_since: float | None = None

    def initialOffset(self) -> dict[str, Any]:
        return {OFFSET_FILES: [], OFFSET_PENDING: []}

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxFiles(self.max_files)

    def latestOffset(self, start: dict[str, Any], limit: ReadLimit) -> dict[str, Any]:
        listed = self._list()
        if listed is None:
            return start  # nothing new this trigger; the next one lists again
        read_before = _read_by(start)
        new = sorted(n for n in listed if n not in read_before)
        if not new:
            return start
        if isinstance(limit, ReadMaxFiles):
            new = new[:max(1, limit.max_files)]
        return {OFFSET_FILES: new, OFFSET_PENDING: sorted(read_before.intersection(listed))}

    def _list(self) -> list[str] | None:
        """The zone's batch names, or None while a listing error is younger than the
        grace: one failed S3 LIST (a throttle, a dropped connection) must not stop the
        region, whose restart costs far more than a trigger; an error that lasts does,
        so that it shows (the stream restarts the region and says why)."""
        try:
            listed = batch_names(self.url)
        except Exception as exc:  # OSError, botocore's errors
            now = time.monotonic()
            self._failing_since = self._failing_since or now
            if now - self._failing_since >= self.list_grace_s:
                raise
            log.warning("landing %s: listing failed, retrying next trigger: %s", self.url, exc)
            return None
        self._failing_since = None
        return listed

    def partitions(self, start: dict[str, Any], end: dict[str, Any]
                   ) -> Sequence[InputPartition]:
        files = offset_files(end) or []
        return [LandingPartition([join(self.url, n) for n in files])] if files else []

    def read(self, partition: InputPartition) -> Iterator[tuple[str]]:
        for line in read_batches(getattr(partition, "urls", [])):
            yield (line,)

    def commit(self, end: dict[str, Any]) -> None:
        delete_batches(self.url, sorted(_read_by(end)))


def _read_by(offset: dict[str, Any]) -> set[str]:
    """Every file read up to ``offset`` and maybe not deleted yet."""
    return set(offset_files(offset) or ()) | set(offset_files(offset, OFFSET_PENDING) or ())


class LandingSource(DataSource):
    """``spark.readStream.format("shelflife_landing").option("path", url)``: one line a
    row (``value``), like Spark's text source, with ``maxFilesPerTrigger``."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_FORMAT

    def schema(self) -> str:
        return "value string"

    def streamReader(self, schema: Any) -> DataSourceStreamReader:
        return LandingReader(self.options["path"],
                             int(self.options.get("maxFilesPerTrigger", 200)))


def register(spark: SparkSession) -> None:
    """Make the source known to ``spark`` (safe to repeat)."""
    spark.dataSource.register(LandingSource)
