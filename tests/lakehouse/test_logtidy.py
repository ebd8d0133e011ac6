"""A frequently committed table keeps a short log without listing it on every commit."""

from __future__ import annotations

import time

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from lakehouse.logtidy import HOOKS, LogTidy


def _log_files(path) -> int:
    return sum(1 for f in (path / "_delta_log").iterdir() if f.suffix == ".json")


def test_expired_log_files_go_every_few_hundred_commits_not_on_each(tmp_path):
    path = tmp_path / "stock"
    data = pa.table({"region": ["east"] * 3, "quantity": [1, 2, 3]})
    write_deltalake(str(path), data, partition_by=["region"],
                    configuration={"delta.checkpointInterval": "10",
                                   "delta.logRetentionDuration": "interval 1 seconds"})
    handle, tidy = DeltaTable(str(path)), LogTidy("stock", every=25)
    for _ in range(24):
        write_deltalake(handle, data, mode="overwrite", predicate="region = 'east'",
                        post_commithook_properties=HOOKS)
        tidy.committed(handle)
    assert _log_files(path) == 25, "nothing removed between two tidy rounds"
    time.sleep(1.2)  # every commit so far is past the table's retention
    write_deltalake(handle, data, mode="overwrite", predicate="region = 'east'",
                    post_commithook_properties=HOOKS)
    tidy.committed(handle)
    assert _log_files(path) < 10, "what precedes the last checkpoint went"
    reopened = DeltaTable(str(path))
    assert reopened.version() == 25
    assert sorted(reopened.to_pyarrow_table()["quantity"].to_pylist()) == [1, 2, 3]
