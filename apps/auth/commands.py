"""The operator login and ``shelflife users add|list|remove`` once chosen (parsers in
:mod:`apps.auth.cli`); bcrypt and PyYAML are imported here."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from apps.auth.cli import ENV_PASSWORD, ENV_USER, refuse
from apps.auth.exceptions import AuthError, LoginRefused
from apps.auth.users import User, UsersFile, check_name, check_password, check_role, users_file_path


def _users_file(args: argparse.Namespace) -> UsersFile:
    return UsersFile(users_file_path(args.users_file, args.lakehouse))


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
