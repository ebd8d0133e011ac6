"""The landing source in a real Structured Streaming query, on a folder and on moto's S3:
every published batch is read once, whatever order its name sorts in, and deleted once
the batch is committed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxFiles

from lakehouse.landing import batch_names, read_batches
from lakehouse.storage import join, s3_client, split_s3
from spark_jobs.stream.source import SOURCE_FORMAT, LandingReader, register
from spark_jobs.stream.steps import batch_files_logged


def _publish(url: str, name: str, lines: list[str]) -> None:
    body = "".join(f"{line}\n" for line in lines).encode()
    if url.startswith("s3://"):
        bucket, prefix = split_s3(url)
        s3_client().put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=body)
    else:
        path = Path(url) / name
        tmp = path.with_name(".tmp-" + name)
        tmp.write_bytes(body)
        tmp.rename(path)


def _wait(query, condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert query.exception() is None, query.exception()
        assert time.monotonic() < deadline, f"timed out: {query.status} {query.lastProgress}"
        time.sleep(0.2)


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_every_batch_is_read_once_and_deleted_after_commit(spark, tmp_path, s3_lake, where):
    url = join(s3_lake, "landing", "east") if where == "s3" else str(tmp_path / "landing")
    if where == "folder":
        Path(url).mkdir()
    checkpoint = tmp_path / "query"
    seen: dict[int, list[str]] = {}

    def batch(frame, batch_id: int) -> None:
        # What the stream reads (the files the offset names) is what the query's own
        # frame holds.
        files = batch_files_logged(checkpoint, batch_id, url)
        seen[batch_id] = sorted(read_batches(files))
        assert seen[batch_id] == sorted(r["value"] for r in frame.collect())

    register(spark)
    _publish(url, "b-0002-w-1.jsonl", ["a", "b"])
    _publish(url, "b-0003-w-2.jsonl", ["c"])
    query = (spark.readStream.format(SOURCE_FORMAT).option("path", url)
             .option("maxFilesPerTrigger", 1).load()
             .writeStream.foreachBatch(batch)
             .option("checkpointLocation", str(checkpoint))
             .trigger(processingTime="1 second").start())
    try:
        _wait(query, lambda: sum(len(v) for v in seen.values()) == 3)
        assert [len(v) for _, v in sorted(seen.items())] == [2, 1]  # one file a trigger
        # A batch an ingest prepared before a crash is published later under an older
        # name: it is read all the same (a name range would skip it).
        _publish(url, "b-0001-w-9.jsonl", ["z"])
        _wait(query, lambda: sum(len(v) for v in seen.values()) == 4)
        # A batch's files are deleted once it is committed, when the next batch is
        # planned (as Spark's cleanSource did): the last batch's file waits for it.
        _publish(url, "b-0004-w-3.jsonl", ["d"])
        _wait(query, lambda: batch_names(url) == ["b-0004-w-3.jsonl"]
              and sum(len(v) for v in seen.values()) == 5)
    finally:
        query.stop()
    assert sorted(x for v in seen.values() for x in v) == ["a", "b", "c", "d", "z"]

    # A restart on the same checkpoint offers nothing again, and deletes what the last
    # batch before the stop had read.
    _publish(url, "b-0005-w-4.jsonl", ["e"])
    before = len(seen)
    query = (spark.readStream.format(SOURCE_FORMAT).option("path", url).load()
             .writeStream.foreachBatch(batch)
             .option("checkpointLocation", str(checkpoint))
             .trigger(processingTime="1 second").start())
    try:
        _wait(query, lambda: len(seen) > before)
        time.sleep(2.5)
    finally:
        query.stop()
    assert [seen[b] for b in sorted(seen)[before:]] == [["e"]]
    assert batch_names(url) == ["b-0005-w-4.jsonl"]


def test_a_file_read_but_not_yet_deleted_is_never_offered_again(tmp_path):
    # Spark deletes batch N's files (commit) only after it has logged batch N + 1; a
    # crash in between, or a failed delete, leaves them in the zone. They ride along in
    # the offsets as pending until a commit deletes them, so no later batch reads them
    # again (their dead letters would be recorded twice).
    url = str(tmp_path)
    for name in ("b-1.jsonl", "b-2.jsonl", "b-3.jsonl"):
        _publish(url, name, ["x"])
    reader = LandingReader(url, max_files=2)
    first = reader.latestOffset(reader.initialOffset(), reader.getDefaultReadLimit())
    assert first == {"files": ["b-1.jsonl", "b-2.jsonl"], "pending": []}
    second = reader.latestOffset(first, ReadMaxFiles(2))
    assert second == {"files": ["b-3.jsonl"], "pending": ["b-1.jsonl", "b-2.jsonl"]}
    # Crash before commit(first): nothing is deleted; the next batch still skips 1-3.
    _publish(url, "b-0.jsonl", ["late, older name"])
    third = reader.latestOffset(second, ReadAllAvailable())
    assert third == {"files": ["b-0.jsonl"], "pending": ["b-1.jsonl", "b-2.jsonl", "b-3.jsonl"]}
    assert reader.latestOffset(third, ReadAllAvailable()) == third  # nothing new: no batch
    reader.commit(third)
    assert batch_names(url) == []
    # A checkpoint from Spark's file source: its offset names no files, so every file
    # in the zone is taken.
    _publish(url, "b-4.jsonl", ["y"])
    assert reader.latestOffset({"logOffset": 9}, ReadAllAvailable())["files"] == ["b-4.jsonl"]


def test_a_failed_listing_waits_for_the_next_trigger_and_a_lasting_one_stops_the_query(
        tmp_path):
    # One failed LIST (a throttle, a dropped connection) must not stop the region; an
    # error that lasts must, so that the stream restarts it and says why.
    not_a_folder = tmp_path / "landing"
    not_a_folder.write_text("")
    start = {"files": ["b-1.jsonl"], "pending": []}
    reader = LandingReader(str(not_a_folder), max_files=10, list_grace_s=0.3)
    assert reader.latestOffset(start, ReadAllAvailable()) == start
    time.sleep(0.35)
    with pytest.raises(NotADirectoryError):
        reader.latestOffset(start, ReadAllAvailable())
    not_a_folder.unlink()
    not_a_folder.mkdir()
    _publish(str(not_a_folder), "b-2.jsonl", ["x"])
    assert reader.latestOffset(start, ReadAllAvailable())["files"] == ["b-2.jsonl"]
