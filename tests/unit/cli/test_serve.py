"""``tagger serve`` refuses to expose an API without tokens beyond loopback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tagger.cli import app
from tagger.cli.serve import is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serving_beyond_loopback_without_tokens_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TAGGER_API__TOKENS", raising=False)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "without tokens" in result.output


def test_a_weak_token_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGGER_API__TOKENS", '[{"name": "x", "token": "short"}]')
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "shorter than 16" in result.output
