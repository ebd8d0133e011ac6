"""Options that fall back to environment variables, as every command's --help shows them."""

from __future__ import annotations

import argparse

import pytest

from lakehouse.options import env_option, env_switch, truthy


def parser_with_port() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    env_option(p, "--port", "SHELFLIFE_TEST_PORT", 8765, "HTTP port", int)
    env_option(p, "--region", "SHELFLIFE_TEST_REGION", None, "region", shown="the database's")
    env_switch(p, "--insecure", "SHELFLIFE_TEST_INSECURE", "open brokers")
    return p


def test_flag_beats_environment_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHELFLIFE_TEST_PORT", raising=False)
    assert parser_with_port().parse_args([]).port == 8765
    monkeypatch.setenv("SHELFLIFE_TEST_PORT", "9000")
    assert parser_with_port().parse_args([]).port == 9000  # parsed by the option's type
    assert parser_with_port().parse_args(["--port", "9100"]).port == 9100


def test_help_names_the_variable_and_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHELFLIFE_TEST_PORT", raising=False)
    text = " ".join(parser_with_port().format_help().split())
    assert "HTTP port (env SHELFLIFE_TEST_PORT; default 8765)" in text
    assert "region (env SHELFLIFE_TEST_REGION; default the database's)" in text
    assert "open brokers (env SHELFLIFE_TEST_INSECURE)" in text


@pytest.mark.parametrize(("value", "on"), [
    (None, False), ("", False), ("0", False), ("no", False), ("1", True), ("true", True),
    (" Yes ", True), ("ON", True),
])
def test_switch_is_turned_on_by_a_true_word(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                            on: bool) -> None:
    if value is None:
        monkeypatch.delenv("SHELFLIFE_TEST_INSECURE", raising=False)
    else:
        monkeypatch.setenv("SHELFLIFE_TEST_INSECURE", value)
    assert truthy(value) is on
    assert parser_with_port().parse_args([]).insecure is on
    assert parser_with_port().parse_args(["--insecure"]).insecure is True
