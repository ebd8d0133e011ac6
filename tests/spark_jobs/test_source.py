"""The landing source in a real Structured Streaming query, on a folder and on moto's S3:
every published batch is read once, whatever order its name sorts in, and deleted once
the batch is committed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lakehouse.storage import join, s3_client, split_s3
from spark_jobs.stream.source import SOURCE_FORMAT, list_batches, register
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
        files = batch_files_logged(checkpoint, batch_id, url)
        # The query's own frame reads the same lines as the files its offset names.
        seen[batch_id] = sorted(r["value"] for r in frame.collect())
        assert files is not None and len(files) == len({f.rsplit("/", 1)[-1] for f in files})

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
        _wait(query, lambda: list_batches(url) == ["b-0004-w-3.jsonl"]
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
    assert list_batches(url) == ["b-0005-w-4.jsonl"]
