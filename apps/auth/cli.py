"""``shelflife users`` and the login every operator command asks for.

``users add|list|remove`` manage the operators file (:mod:`apps.auth.users`).
``transfers approve|reject`` and ``review resolve`` take ``--user NAME`` (env
``SHELFLIFE_USER``) and the password from a prompt, or from ``SHELFLIFE_PASSWORD`` for
automation (any process of the same owner can read a process's environment, so a script
should get it from a secret store, not a file in the repository). What they record is the
name that logged in; a refused login, or a viewer, records nothing and exits 2.

The commands themselves, with bcrypt and PyYAML, are in :mod:`apps.auth.commands`,
imported only when one runs, so the store agent's CLI (``shelflife agent``, on hardware
with only paho-mqtt) starts without them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from apps.auth.exceptions import AuthError
from apps.lazy import handler

ENV_USER = "SHELFLIFE_USER"
ENV_PASSWORD = "SHELFLIFE_PASSWORD"
USERS_FILE_HELP = "operators file (default <lakehouse>/_auth/users.yaml)"


def refuse(exc: AuthError) -> int:
    """Print why, and give the exit code every refusal shares."""
    print(f"error: {exc}", file=sys.stderr)
    return 2


class _RemovedBy(argparse.Action):
    """``--by NAME`` let anyone record any name; it now stops with where to go instead."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error("--by is no longer accepted: the record names the operator who logs "
                     f"in. Use --user NAME (env {ENV_USER}) and give the password at the "
                     f"prompt (or in {ENV_PASSWORD} for scripts); add operators with "
                     "`shelflife users add NAME`")


def add_operator_options(p: argparse.ArgumentParser, add_option: Callable[..., None]) -> None:
    """``--user`` and ``--users-file`` for a command that records who acted."""
    add_option(p, "--user", ENV_USER, None,
               f"operator to log in as; the password is asked for, or read from "
               f"{ENV_PASSWORD} (for automation: visible to the process owner)")
    add_option(p, "--users-file", "SHELFLIFE_USERS_FILE", None, USERS_FILE_HELP)
    p.add_argument("--by", action=_RemovedBy, help=argparse.SUPPRESS)


def add_user_commands(sub: argparse._SubParsersAction, add_option: Callable[..., None]
                      ) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        add_option(p, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse",
                   "lakehouse root folder")
        add_option(p, "--users-file", "SHELFLIFE_USERS_FILE", None, USERS_FILE_HELP)

    users = sub.add_parser("users", help="operators who may approve transfers and resolve "
                                         "review items (CLI and dashboard logins)")
    usub = users.add_subparsers(dest="users_command", required=True)
    p = usub.add_parser("add", help="add an operator (password asked twice, min. 12 chars)")
    common(p)
    p.add_argument("name", help="lower-case letters, digits, '.', '_', '-'")
    p.add_argument("--role", choices=("approver", "viewer"), default="approver",
                   help="approver: may decide; viewer: may only look (default approver)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input")
    p.add_argument("--reset", action="store_true",
                   help="replace an existing operator's password and role")
    p.set_defaults(fn=handler("apps.auth.commands:cmd_users_add"))
    p = usub.add_parser("list", help="operators and their roles (no passwords)")
    common(p)
    p.set_defaults(fn=handler("apps.auth.commands:cmd_users_list"))
    p = usub.add_parser("remove", help="remove an operator")
    common(p)
    p.add_argument("name")
    p.set_defaults(fn=handler("apps.auth.commands:cmd_users_remove"))
