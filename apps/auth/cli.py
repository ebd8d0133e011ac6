"""``shelflife users`` and the login every operator command asks for.

``users add|list|remove`` manage the operators file (:mod:`apps.auth.users`).
``transfers approve|reject`` and ``review resolve`` take ``--user NAME`` (env
``SHELFLIFE_USER``) and the password from a prompt, or from ``SHELFLIFE_PASSWORD`` for
automation (any process of the same owner can read a process's environment, so a script
should get it from a secret store, not a file in the repository). What they record is the
name that logged in; a refused login, or a viewer, records nothing and exits 2.

bcrypt and PyYAML are imported only when a command runs, so the store agent's CLI
(``shelflife agent``, on hardware with only paho-mqtt) starts without them.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from apps.auth.exceptions import AuthError, LoginRefused

if TYPE_CHECKING:
    from apps.auth.users import User, UsersFile

ENV_USER = "SHELFLIFE_USER"
ENV_PASSWORD = "SHELFLIFE_PASSWORD"
USERS_FILE_HELP = "operators file (default <lakehouse>/_auth/users.yaml)"


def refuse(exc: AuthError) -> int:
    """Print why, and give the exit code every refusal shares."""
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _users_file(args: argparse.Namespace) -> UsersFile:
    from apps.auth.users import UsersFile, users_file_path  # bcrypt, yaml: not at a store

    return UsersFile(users_file_path(args.users_file, args.lakehouse))


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


def operator(args: argparse.Namespace, action: str) -> User:
    """The logged-in operator who may do ``action``; :class:`AuthError` otherwise."""
    users = _users_file(args)
    if not args.user:
        raise LoginRefused(f"--user NAME (or {ENV_USER}) is required to {action}")
    if not users.users():
        raise LoginRefused(f"no users yet in {users.path}: run `shelflife users add NAME`")
    password = os.environ.get(ENV_PASSWORD)
    if password is None:
        try:
            password = getpass.getpass(f"password for {args.user}: ")
        except EOFError as exc:
            raise LoginRefused(f"no password given for {args.user!r}") from exc
    return users.authenticate(args.user, password).require_decider(action)


def _new_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"new password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise LoginRefused("the two passwords differ; nothing changed")
    return first


def cmd_users_add(args: argparse.Namespace) -> int:
    from apps.auth.users import check_name, check_password, check_role  # as above

    users = _users_file(args)
    try:
        check_name(args.name)
        check_role(args.role)
        if args.name in users.users() and not args.reset:
            raise LoginRefused(f"{args.name} already exists in {users.path} "
                               "(use --reset to change its password or role)")
        user = users.add(args.name, check_password(_new_password(args)), args.role,
                         reset=args.reset)
    except AuthError as exc:
        return refuse(exc)
    print(f"{user.name} ({user.role}) {'reset' if args.reset else 'added'} in {users.path}")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    users = _users_file(args)
    try:
        everyone = users.users()
    except AuthError as exc:
        return refuse(exc)
    if not everyone:
        print(f"no users yet in {users.path}: run `shelflife users add NAME`")
        return 0
    print(f"{'name':<20} {'role':<9} added")
    for user in sorted(everyone.values(), key=lambda u: u.name):
        print(f"{user.name:<20} {user.role:<9} {user.created_at}")
    return 0


def cmd_users_remove(args: argparse.Namespace) -> int:
    users = _users_file(args)
    try:
        users.remove(args.name)
    except AuthError as exc:
        return refuse(exc)
    print(f"{args.name} removed from {users.path}")
    return 0


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
    p.set_defaults(fn=cmd_users_add)
    p = usub.add_parser("list", help="operators and their roles (no passwords)")
    common(p)
    p.set_defaults(fn=cmd_users_list)
    p = usub.add_parser("remove", help="remove an operator")
    common(p)
    p.add_argument("name")
    p.set_defaults(fn=cmd_users_remove)
