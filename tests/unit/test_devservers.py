"""The helper servers explain themselves when they cannot start."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tagger.cli import app
from tagger_dev.devservers import DevServerError, MotoServer


def no_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "moto" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_a_missing_moto_is_named_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_moto(monkeypatch)
    with pytest.raises(DevServerError, match=r"moto is not installed.*\.\[bench\]"):
        MotoServer(tmp_path).start()


def test_bench_backfill_says_so_instead_of_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_moto(monkeypatch)
    monkeypatch.setenv("TAGGER_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["bench-backfill", "--objects", "10"])
    assert result.exit_code == 1
    assert "moto is not installed" in result.output
    assert "Traceback" not in result.output
