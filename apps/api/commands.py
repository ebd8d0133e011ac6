"""What ``shelflife api-keys`` does once chosen (parser in :mod:`apps.cli`). The server,
``shelflife api``, is :func:`apps.api.server.cmd_api`: managing keys needs no web stack."""

from __future__ import annotations

import argparse
import sys

from apps.api.keys import ApiKeysFile, keys_file_path
from apps.auth.exceptions import AuthError


def _keys(args: argparse.Namespace) -> ApiKeysFile:
    return ApiKeysFile(keys_file_path(args.keys_file, args.lakehouse))


def cmd_keys_add(args: argparse.Namespace) -> int:
    """Print the new token alone on stdout (for a script to capture), and where it is
    kept on stderr: the token is shown this once."""
    keys = _keys(args)
    try:
        token = keys.add(args.name, reset=args.reset)
    except AuthError as exc:
        print(f"api-keys add: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(f"api-keys: key for {args.name!r} added to {keys.path}; the token above is "
          "shown only now", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _keys(args)
    try:
        entries = keys.keys()
    except AuthError as exc:
        print(f"api-keys list: {exc}", file=sys.stderr)
        return 2
    if not entries:
        print(f"no API keys in {keys.path}")
    for k in entries.values():
        print(f"{k.name}\tid {k.key_id}\tadded {k.created_at}")
    return 0


def cmd_keys_remove(args: argparse.Namespace) -> int:
    try:
        _keys(args).remove(args.name)
    except AuthError as exc:
        print(f"api-keys remove: {exc}", file=sys.stderr)
        return 2
    print(f"api-keys: {args.name!r} removed; its token no longer works")
    return 0
