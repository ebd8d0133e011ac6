"""How every broker-facing ``shelflife`` command logs in: the same three options each.

``--credentials`` is the secure brokers' ``credentials.json`` (by default where
``shelflife broker`` writes it, so commands run from the same folder find it),
``--insecure`` talks to an open broker anonymously, with unsigned acks and orders, and
``--tls-ca`` checks the brokers' TLS certificate. Secure is the default: a command that
finds no credentials file stops and says what to do rather than fall back to anonymous.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path

from lakehouse.credentials import CREDENTIALS_FILE, Credentials, CredentialsMissing
from lakehouse.options import env_switch

log = logging.getLogger("shelflife")
BROKER_DIR = "./var/brokers"
"""``shelflife broker``'s default ``--data-dir`` (env SHELFLIFE_BROKER_DIR)."""


def default_credentials() -> str:
    """Where ``shelflife broker`` puts ``credentials.json`` with its default data dir."""
    return str(Path(os.environ.get("SHELFLIFE_BROKER_DIR", BROKER_DIR)) / CREDENTIALS_FILE)


def add_connection_options(p: argparse.ArgumentParser, add_option: Callable[..., None],
                           *, who: str) -> None:
    """``--credentials``, ``--insecure`` and ``--tls-ca``; ``who`` says what it logs in as."""
    add_option(p, "--credentials", "SHELFLIFE_CREDENTIALS", default_credentials(),
               f"the secure brokers' credentials.json ({who})")
    env_switch(p, "--insecure", "SHELFLIFE_INSECURE",
               "open brokers: connect anonymously, acks and orders unsigned")
    add_option(p, "--tls-ca", "SHELFLIFE_TLS_CA", None,
               "CA certificate (PEM) of the brokers' TLS listeners; set = connect over TLS")


def open_credentials(args: argparse.Namespace, command: str) -> Credentials | None:
    """The credentials a command logs in with, or None under ``--insecure`` (said once)."""
    if args.insecure:
        log.warning("%s: --insecure: connecting anonymously; acks and orders are not "
                    "signed, so agents with a signing key will refuse them", command)
        return None
    try:
        return Credentials.open(Path(args.credentials), create=False)
    except CredentialsMissing as exc:
        raise SystemExit(f"{command}: {exc}") from None
    except ValueError as exc:
        raise SystemExit(f"{command}: {exc}") from None
