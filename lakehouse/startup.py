"""How far a starting component has come, for the dashboard to say while gold is empty.

On a fresh machine the first stock appears minutes after ``shelflife demo`` starts: Spark
starts its JVM, downloads the Delta jars once, rebuilds each region's state, then waits
for its first batch. A page that only says "waiting" for three minutes looks broken, so
each long-starting component writes its current step here and the dashboard shows it.

One small JSON file per component under ``<state>/_startup/`` (this machine's state
folder: the lakehouse folder, or ``$SHELFLIFE_STATE_DIR`` for an S3 lakehouse), replaced
atomically. Nothing depends on it being there: it is a courtesy to the person watching.
Standard library only (boto3 is not needed: the state folder is always local).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lakehouse.paths import lakehouse_root

log = logging.getLogger("shelflife.startup")
FOLDER = "_startup"


@dataclass(frozen=True)
class Step:
    """One component's current step: ``number`` of ``of``, what it is doing, since when."""

    component: str
    number: int
    of: int
    doing: str
    since: float
    pid: int
    began: float

    @property
    def done(self) -> bool:
        return self.number >= self.of


class Progress:
    """The steps of one component's start, written as it reaches each."""

    def __init__(self, root: str | os.PathLike[str] | None, component: str,
                 steps: int) -> None:
        self.path = lakehouse_root(root) / FOLDER / f"{component}.json"
        self.component, self.steps = component, steps
        self.began = time.time()

    def step(self, number: int, doing: str) -> None:
        """Record that the start is at step ``number`` (1-based) of this component's."""
        step = Step(self.component, number, self.steps, doing, time.time(), os.getpid(),
                    self.began)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(asdict(step)), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:  # a read-only or full disk must not stop the start itself
            log.warning("cannot record start-up progress in %s: %s", self.path, exc)


def read(root: str | os.PathLike[str] | None) -> list[Step]:
    """Every component's last recorded step, by component name; unreadable files are
    skipped (one may be half-replaced by a component that died)."""
    folder = lakehouse_root(root) / FOLDER
    steps = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, TypeError):
            steps.append(Step(**json.loads(path.read_text(encoding="utf-8"))))
    return steps


def alive(step: Step) -> bool:
    """Whether the process that recorded ``step`` still runs on this machine."""
    try:
        os.kill(step.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def first_run_downloads(cache: Path | None = None) -> bool:
    """True when Spark has not yet cached the Delta jars (``~/.ivy2.5.2/jars``), so its
    first start downloads them from Maven Central."""
    jars = cache or Path.home() / ".ivy2.5.2" / "jars"
    return not any(jars.glob("io.delta_delta-spark*.jar"))
