"""Command-line options that fall back to environment variables.

Every Shelflife command, the store agent's included, can be configured by flags or by
``SHELFLIFE_*`` variables (a store's service file, a container), and ``--help`` names the
variable behind each flag. Standard library only, so the agent can use it without the
server packages.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

TRUE_WORDS = ("1", "true", "yes", "on")


def truthy(text: str | None) -> bool:
    """Whether an environment value means "on" (``1``, ``true``, ``yes``, ``on``)."""
    return (text or "").strip().lower() in TRUE_WORDS


def env_option(parser: argparse.ArgumentParser, flag: str, env: str, default: Any,
               help: str, type: Callable[[str], Any] = str, *, shown: str | None = None,
               **kwargs: Any) -> None:
    """Add ``flag`` whose default is ``$env`` (parsed by ``type``) when set, else ``default``.

    The help text ends with the variable and the default (``shown`` words a default that
    is worked out later, e.g. "the database's"); ``kwargs`` go to ``add_argument``.
    """
    value = os.environ.get(env)
    parser.add_argument(flag, default=type(value) if value is not None else default,
                        type=type, help=f"{help} (env {env}; default {shown or default})",
                        **kwargs)


def env_switch(parser: argparse.ArgumentParser, flag: str, env: str, help: str) -> None:
    """Add an on/off ``flag`` that ``$env`` (see :func:`truthy`) turns on by default."""
    parser.add_argument(flag, action="store_true", default=truthy(os.environ.get(env)),
                        help=f"{help} (env {env})")
