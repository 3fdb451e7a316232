"""``tagger worker``: what it hands Celery before it execs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.cli.app import app as cli_app


def run_worker(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda _path, argv: calls.append(list(argv)))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    outcome = CliRunner().invoke(cli_app, ["worker", "-c", "2"])
    assert outcome.exit_code == 0, outcome.output
    (argv,) = calls
    return argv


def test_worker_gets_a_fresh_metrics_folder_in_its_environment_before_exec(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """prometheus_client reads the variable once, at import, so it must be in the
    environment Celery starts with; the CLI sets it for the process it turns into."""
    # set (and so restored after the test), whatever the CLI puts there
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "unset-by-the-test")
    stale = tmp_path / "metrics" / str(os.getpid())
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"an earlier run")
    argv = run_worker(monkeypatch, TAGGER_METRICS__MULTIPROC_DIR=str(tmp_path / "metrics"))
    assert argv[1:5] == ["-m", "celery", "-A", "workers.app"]
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(stale)
    assert stale.is_dir() and not any(stale.iterdir())


def test_worker_without_metrics_leaves_the_environment_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    run_worker(
        monkeypatch,
        TAGGER_METRICS__PORT="0",
        TAGGER_METRICS__MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert not (tmp_path / "metrics").exists()


def test_a_metrics_folder_that_cannot_be_made_does_not_stop_the_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "unset-by-the-test")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    argv = run_worker(monkeypatch, TAGGER_METRICS__MULTIPROC_DIR=str(blocker / "metrics"))
    assert argv[1:5] == ["-m", "celery", "-A", "workers.app"], "the worker still starts"
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
