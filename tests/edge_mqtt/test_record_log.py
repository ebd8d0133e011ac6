"""The agent process's record log: what the agents answered, for a bench's oracle."""

from __future__ import annotations

import json

from edge_mqtt.agent import StoreAgent
from edge_mqtt.agent_process import RecordLog, parse_args, record_next


def logged(path) -> list[int]:
    return [json.loads(line)["event"]["seq"] for line in path.read_text().splitlines()]


def test_a_torn_line_is_cut_and_unlogged_commits_are_copied_from_the_outbox(tmp_path):
    agent = StoreAgent("E-LOG", "east", tmp_path / "e.sqlite")
    log = RecordLog(tmp_path / "log.jsonl")
    for _ in range(5):
        log.write(record_next(agent, 3), 1.0)
    # killed after committing two more events, one of them half-written to the log
    record_next(agent, 3)
    record_next(agent, 3)
    log.close()
    with (tmp_path / "log.jsonl").open("a") as fh:
        fh.write('{"t": 1.0, "event": {"seq"')
    again = RecordLog(tmp_path / "log.jsonl")
    again.catch_up(agent)
    again.close()
    assert logged(tmp_path / "log.jsonl") == [1, 2, 3, 4, 5, 6, 7]
    assert again.gaps == 0
    agent.close()


def test_several_locations_need_a_folder():
    args = parse_args(["--db-dir", "d", "--locations", "A,B", "--region", "east",
                       "--port", "1", "--events", "5"])
    assert args.locations == ["A", "B"]
