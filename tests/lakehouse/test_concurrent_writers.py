"""Writers that share a table, at once, on S3 (moto's server), with ``shelflife maintain``
compacting and vacuuming beside them: no commit's rows are lost and none are there
twice (the pairs are in ``tests.lakehouse.writer_pairs``)."""

from __future__ import annotations

import pytest

from tests.lakehouse.writer_pairs import PAIRS, commits_lost

COMMITS = 12
"""Commits per writer: enough for the writers and maintenance to interleave many times
on a two-core machine, few enough for the file to take well under two minutes."""


@pytest.mark.parametrize("pair", list(PAIRS))
def test_a_pair_of_writers_and_maintenance_lose_and_double_nothing(pair, s3_lake):
    result = PAIRS[pair](s3_lake, COMMITS)
    assert result.commits >= 2 * COMMITS
    assert (result.rows_lost, result.rows_doubled) == (0, 0), result
    assert commits_lost([result]) == 0, result
    assert result.maintain_rounds >= 1, "maintenance ran beside the writers"

