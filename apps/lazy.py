"""Command handlers named by ``module:function`` and loaded when the command runs.

``shelflife`` is one command for the store machine and the central servers alike. The
store has only paho-mqtt installed, so a handler that needs Spark, pandas, delta-rs,
prometheus-client or bcrypt lives in a module that imports them at its top, and the parser
names it by string: the module is imported only when its command is chosen. This is the
one place the CLI defers an import (``tests/test_layers.py`` checks that the store's
commands load no server package).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]


def handler(target: str) -> Handler:
    """A handler that imports ``module:function`` on first use and calls it."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"handler: expected 'module:function', got {target!r}")

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)

    run.__qualname__ = run.__name__ = name
    return run
