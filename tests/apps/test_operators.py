"""Operators: the users file, and CLI actions that record only a logged-in name.

Every command runs as a user runs it: ``python -m apps.cli`` in its own process, the
password in ``SHELFLIFE_PASSWORD`` or on standard input; results are read back from the
users file and from Delta with deltalake.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import deltalake
import pyarrow as pa
import pytest

from apps.auth.users import UsersFile
from apps.demo import DEMO_USER, ensure_demo_user
from lakehouse import catalogue
from tests.apps.pages import (
    APPROVER,
    APPROVER_PASSWORD,
    VIEWER,
    VIEWER_PASSWORD,
    write_operators,
    write_transfer_recommendations,
)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def shelflife(*args: str, root: Path, password: str | None = None, stdin: str = "",
              user: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SHELFLIFE_USER", "SHELFLIFE_PASSWORD", "SHELFLIFE_USERS_FILE")}
    env.update(SHELFLIFE_LAKEHOUSE=str(root), PYTHONPATH=str(REPO))
    if password is not None:
        env["SHELFLIFE_PASSWORD"] = password
    if user is not None:
        env["SHELFLIFE_USER"] = user
    return subprocess.run([sys.executable, "-m", "apps.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def _decisions(root: Path) -> list[tuple[str, str, str]]:
    path = catalogue.TRANSFER_DECISIONS.path(root)
    if not (path / "_delta_log").exists():
        return []
    return [(r["recommendation_id"], r["decision"], r["decided_by"])
            for r in deltalake.DeltaTable(str(path)).to_pyarrow_table().to_pylist()]


def test_users_file_holds_bcrypt_hashes_in_a_private_file(tmp_path: Path) -> None:
    users_file = tmp_path / "_auth" / "users.yaml"
    added = shelflife("users", "add", "ana", "--password-stdin", root=tmp_path,
                      stdin="ana's long passphrase\n")
    assert added.returncode == 0, added.stderr
    assert "ana (approver) added" in added.stdout
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(users_file.parent.stat().st_mode) == 0o700
    text = users_file.read_text()
    assert "passphrase" not in text
    stored = UsersFile(users_file).users()["ana"]
    assert bcrypt.checkpw(b"ana's long passphrase", stored.password_hash.encode())
    assert not [p.name for p in users_file.parent.iterdir() if ".tmp" in p.name]

    viewer = shelflife("users", "add", "vic", "--role", "viewer", "--password-stdin",
                       root=tmp_path, stdin="vic only looks around\n")
    assert viewer.returncode == 0, viewer.stderr
    listed = shelflife("users", "list", root=tmp_path)
    assert [line.split()[:2] for line in listed.stdout.splitlines()[1:]] == [
        ["ana", "approver"], ["vic", "viewer"]]
    assert "$2" not in listed.stdout  # no hashes on screen either

    again = shelflife("users", "add", "ana", "--password-stdin", root=tmp_path,
                      stdin="another long passphrase\n")
    assert again.returncode == 2 and "already exists" in again.stderr
    short = shelflife("users", "add", "bo", "--password-stdin", root=tmp_path,
                      stdin="too short\n")
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    assert "bo" not in UsersFile(users_file).users()

    reset = shelflife("users", "add", "ana", "--reset", "--password-stdin", root=tmp_path,
                      stdin="another long passphrase\n")
    assert reset.returncode == 0, reset.stderr
    users = UsersFile(users_file)
    assert users.authenticate("ana", "another long passphrase").name == "ana"
    with pytest.raises(Exception, match="wrong password"):
        users.authenticate("ana", "ana's long passphrase")

    removed = shelflife("users", "remove", "vic", root=tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert sorted(UsersFile(users_file).users()) == ["ana"]


def test_approving_needs_the_right_password_of_an_approver(tmp_path: Path) -> None:
    recs = write_transfer_recommendations(tmp_path, datetime.now(UTC))
    write_operators(tmp_path / "_auth" / "users.yaml")
    approve = ("transfers", "approve", recs[0])

    wrong = shelflife(*approve, "--user", APPROVER, root=tmp_path, password="guess guess guess")
    assert wrong.returncode == 2
    assert "login refused" in wrong.stderr and "approved" not in wrong.stdout
    unknown = shelflife(*approve, "--user", "mallory", root=tmp_path,
                        password=APPROVER_PASSWORD)
    assert unknown.returncode == 2 and "login refused" in unknown.stderr
    viewer = shelflife(*approve, "--user", VIEWER, root=tmp_path, password=VIEWER_PASSWORD)
    assert viewer.returncode == 2 and "vic is a viewer" in viewer.stderr
    nobody = shelflife(*approve, root=tmp_path, password=APPROVER_PASSWORD)
    assert nobody.returncode == 2 and "--user NAME" in nobody.stderr
    old = shelflife(*approve, "--by", APPROVER, root=tmp_path)
    assert old.returncode == 2 and "use --user" in old.stderr.lower()
    assert _decisions(tmp_path) == []  # none of those recorded anything

    done = shelflife(*approve, root=tmp_path, user=APPROVER, password=APPROVER_PASSWORD)
    assert done.returncode == 0, done.stderr
    assert f"{recs[0]}: approved by {APPROVER}" in done.stdout
    # At the prompt (no terminal here, so getpass reads standard input).
    prompted = shelflife("transfers", "reject", recs[1], "--user", APPROVER, root=tmp_path,
                         stdin=APPROVER_PASSWORD + "\n")
    assert prompted.returncode == 0, prompted.stderr
    assert sorted(_decisions(tmp_path)) == sorted([(recs[0], "approved", APPROVER),
                                                   (recs[1], "rejected", APPROVER)])


def test_no_user_ships_so_nobody_can_approve_on_a_fresh_lakehouse(tmp_path: Path) -> None:
    recs = write_transfer_recommendations(tmp_path, datetime.now(UTC))
    for name, password in (("admin", "admin"), ("demo", "demo"), ("ana", APPROVER_PASSWORD)):
        done = shelflife("transfers", "approve", recs[0], "--user", name, root=tmp_path,
                         password=password)
        assert done.returncode == 2 and "no users yet" in done.stderr
    assert _decisions(tmp_path) == []


def _review_tables(root: Path) -> None:
    """One open review item in gold and an empty resolutions table, as the stream keeps."""
    ts = pa.timestamp("us", tz="UTC")
    queue = pa.table({"region": ["east"], "item_id": ["E001:4"], "location_id": ["E001"],
                      "sku": ["DAIRY-YOG-500"], "status": ["open"], "resolved_by": [None],
                      "detected_at": pa.array([datetime.now(UTC)], ts)})
    deltalake.write_deltalake(str(catalogue.REVIEW_QUEUE.path(root)), queue)
    resolutions = pa.schema([("item_id", pa.string()), ("region", pa.string()),
                             ("resolved_by", pa.string()), ("resolved_at", ts),
                             ("resolution", pa.string()), ("adjustment_event_id", pa.string())])
    deltalake.write_deltalake(str(catalogue.REVIEW_RESOLUTIONS.path(root)),
                              resolutions.empty_table())


def test_resolving_a_review_item_records_the_logged_in_operator(tmp_path: Path) -> None:
    _review_tables(tmp_path)
    write_operators(tmp_path / "_auth" / "users.yaml")
    resolve = ("review", "resolve", "E001:4", "--how", "recounted: entry error")

    def resolved() -> list[tuple[str, str]]:
        rows = deltalake.DeltaTable(str(catalogue.REVIEW_RESOLUTIONS.path(tmp_path)))
        return [(r["item_id"], r["resolved_by"]) for r in rows.to_pyarrow_table().to_pylist()]

    wrong = shelflife(*resolve, "--user", APPROVER, root=tmp_path, password="guess guess guess")
    assert wrong.returncode == 2 and "login refused" in wrong.stderr
    viewer = shelflife(*resolve, "--user", VIEWER, root=tmp_path, password=VIEWER_PASSWORD)
    assert viewer.returncode == 2 and "only approvers may resolve" in viewer.stderr
    assert resolved() == []

    done = shelflife(*resolve, "--user", APPROVER, root=tmp_path, password=APPROVER_PASSWORD)
    assert done.returncode == 0, done.stderr
    assert "E001:4: resolved by ana" in done.stdout
    assert resolved() == [("E001:4", APPROVER)]


def test_the_demo_adds_one_approver_with_a_fresh_random_password(tmp_path: Path) -> None:
    first, second = UsersFile(tmp_path / "a" / "users.yaml"), UsersFile(tmp_path / "b" /
                                                                         "users.yaml")
    one, two = ensure_demo_user(first), ensure_demo_user(second)
    assert one and two and one != two and len(one) >= 12
    assert first.authenticate(DEMO_USER, one).may_decide
    assert one not in first.path.read_text()
    assert ensure_demo_user(first) is None  # a later start leaves the operators alone
    assert first.authenticate(DEMO_USER, one).name == DEMO_USER
