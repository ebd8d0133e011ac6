"""The operators file: who may act on the lakehouse, with bcrypt password hashes.

Approving a transfer ships goods, and resolving a review item can post a stock
correction, so the name on those records must be a person who proved who they are. The
CLI (``--user`` + password) and the dashboard (login form) check against this one file.

The file is YAML in the layout streamlit-authenticator reads (``credentials.usernames``),
so the dashboard hands it over as it is. It lives at ``<lakehouse>/_auth/users.yaml``
unless ``--users-file`` / ``$SHELFLIFE_USERS_FILE`` says otherwise, mode 0600 in a 0700
folder, and is replaced atomically (temporary file, fsync, rename, fsync of the folder)
under a lock, so two ``shelflife users add`` at once neither tear it nor lose a user.
No user ships: an empty or missing file lets nobody in.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import bcrypt
import yaml

from apps.auth.exceptions import LoginRefused, NotPermitted, UsersFileError
from lakehouse.durable import fsync_dir, private_lock, replace_durably
from lakehouse.paths import lakehouse_root

ENV_USERS_FILE = "SHELFLIFE_USERS_FILE"
Role = Literal["approver", "viewer"]
ROLES: tuple[str, ...] = get_args(Role)
DECIDERS = frozenset({"approver"})
"""Roles that may approve or reject transfers and resolve review items."""
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_BYTES = 72
"""bcrypt reads only the first 72 bytes (and bcrypt 5 refuses longer input)."""
_NAME = re.compile(r"[a-z][a-z0-9._-]{0,63}")
_FORMAT_VERSION = 1


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the name is unknown, so an unknown name costs as long as a
    known one and timing does not tell which names exist."""
    return bcrypt.hashpw(b"no such user", bcrypt.gensalt()).decode()


def check_name(name: str) -> str:
    """A user name as stored: lower-case letters, digits, ``.``, ``_``, ``-``; starting
    with a letter. The dashboard's login lower-cases what is typed, so only lower case
    can ever match."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsersFileError("name", name, "expected 1-64 lower-case letters, digits, "
                                           "'.', '_' or '-', starting with a letter")
    return name


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise UsersFileError("role", role, f"expected one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def check_password(password: str) -> str:
    """At least 12 characters, at most 72 bytes, no surrounding spaces (the login form
    strips them, so such a password could never be typed back)."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise UsersFileError("password", None,
                             f"at least {MIN_PASSWORD_CHARS} characters needed "
                             f"(got {len(password)})")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise UsersFileError("password", None, f"at most {MAX_PASSWORD_BYTES} bytes "
                                               "(bcrypt ignores the rest)")
    if password != password.strip():
        raise UsersFileError("password", None, "must not start or end with whitespace")
    return password


def hash_password(password: str) -> str:
    """A bcrypt hash (random salt, cost 12) of an acceptable password."""
    return bcrypt.hashpw(check_password(password).encode(), bcrypt.gensalt()).decode()


def users_file_path(users_file: str | os.PathLike[str] | None = None,
                    lakehouse: str | os.PathLike[str] | None = None) -> Path:
    """``users_file`` if given, else ``$SHELFLIFE_USERS_FILE``, else
    ``<lakehouse>/_auth/users.yaml``."""
    chosen = users_file or os.environ.get(ENV_USERS_FILE)
    if chosen:
        return Path(chosen).resolve()
    return lakehouse_root(lakehouse) / "_auth" / "users.yaml"


@dataclass(frozen=True)
class User:
    """One operator as stored: name, role and password hash (never the password)."""

    name: str
    role: Role
    password_hash: str = field(repr=False)
    created_at: str = ""

    def __post_init__(self) -> None:
        check_name(self.name)
        check_role(self.role)
        if not self.password_hash.startswith("$2"):
            raise UsersFileError(f"users.{self.name}.password", None,
                                 "expected a bcrypt hash; add users with `shelflife users add`")

    @property
    def may_decide(self) -> bool:
        return self.role in DECIDERS

    def require_decider(self, action: str) -> User:
        """This user, if the role allows ``action``; :class:`NotPermitted` otherwise."""
        if not self.may_decide:
            raise NotPermitted(f"{self.name} is a {self.role}: only "
                               f"{' or '.join(sorted(DECIDERS))}s may {action}")
        return self


def _parse(text: str, path: Path) -> dict[str, User]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UsersFileError("users file", str(path), f"not valid YAML: {exc}") from exc
    entries = ((data.get("credentials") or {}).get("usernames") or {}) if isinstance(
        data, dict) else None
    if not isinstance(entries, dict):
        raise UsersFileError("users file", str(path), "expected credentials.usernames")
    users = {}
    for name, entry in entries.items():
        roles = entry.get("roles") or []
        users[name] = User(name=name, role=roles[0] if roles else "",
                           password_hash=str(entry.get("password", "")),
                           created_at=str(entry.get("created_at", "")))
    return users


def _render(users: dict[str, User]) -> str:
    body = {"version": _FORMAT_VERSION, "credentials": {"usernames": {
        u.name: {"name": u.name, "password": u.password_hash, "roles": [u.role],
                 "created_at": u.created_at} for u in sorted(users.values(),
                                                              key=lambda u: u.name)}}}
    return ("# Shelflife operators. Passwords are bcrypt hashes; change this file with\n"
            "# `shelflife users add|remove`, not by hand.\n"
            + yaml.safe_dump(body, sort_keys=False))


class UsersFile:
    """The operators file at ``path``: read it, change it, check a login against it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def cookie_key_path(self) -> Path:
        """The dashboard's cookie-signing key, one per users file, next to it."""
        return self.path.with_name(self.path.name + ".cookie-key")

    def users(self) -> dict[str, User]:
        """Everyone in the file; empty when the file does not exist yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        return _parse(text, self.path)

    def _private_folder(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.parent.chmod(0o700)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold the folder's lock across read, change and replace."""
        return private_lock(self.path)

    def _write(self, users: dict[str, User]) -> None:
        replace_durably(self.path, _render(users), mode=0o600)

    def add(self, name: str, password: str, role: Role = "approver", *,
            reset: bool = False) -> User:
        """Add a user, or with ``reset`` replace an existing one's password and role.

        A reset also replaces the dashboard's cookie key, so browsers that stayed logged
        in under the old password must log in again.
        """
        user = User(name=check_name(name), role=check_role(role),
                    password_hash=hash_password(password),
                    created_at=datetime.now(UTC).isoformat(timespec="seconds"))
        with self._locked():
            users = self.users()
            if name in users and not reset:
                raise UsersFileError("name", name, "already exists (use --reset to change "
                                                   "its password or role)")
            users[name] = user
            self._write(users)
            if reset:
                self._drop_cookie_key()
        return user

    def remove(self, name: str) -> None:
        """Remove a user; the cookie key is replaced so no browser stays logged in as it."""
        with self._locked():
            users = self.users()
            if name not in users:
                raise UsersFileError("name", name, "no such user")
            del users[name]
            self._write(users)
            self._drop_cookie_key()

    def authenticate(self, name: str, password: str) -> User:
        """The user if the password matches; :class:`LoginRefused` otherwise (the same
        refusal, after the same work, whether the name is unknown or the password wrong)."""
        user = self.users().get(name)
        stored = user.password_hash if user else _dummy_hash()
        try:
            ok = bcrypt.checkpw(password.encode()[:MAX_PASSWORD_BYTES], stored.encode())
        except ValueError:
            ok = False
        if not (ok and user):
            raise LoginRefused(f"login refused for {name!r}: unknown user or wrong password")
        return user

    def credentials(self) -> dict[str, Any]:
        """The ``credentials`` mapping streamlit-authenticator takes (a fresh copy: the
        library writes login state into it)."""
        return {"usernames": {u.name: {"name": u.name, "password": u.password_hash,
                                       "roles": [u.role]} for u in self.users().values()}}

    def cookie_key(self) -> str:
        """The key that signs the dashboard's login cookie: random, made on first use,
        mode 0600. Made with a hard link from a synced temporary file, so two dashboards
        starting at once agree on one key."""
        path = self.cookie_key_path
        with contextlib.suppress(FileNotFoundError):
            return path.read_text(encoding="utf-8").strip()
        self._private_folder()
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
            fsync_dir(path.parent)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            tmp.unlink()
        return path.read_text(encoding="utf-8").strip()

    def _drop_cookie_key(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.cookie_key_path.unlink()
            fsync_dir(self.path.parent)
