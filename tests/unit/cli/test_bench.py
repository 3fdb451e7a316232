"""`tagger bench*` are development tools from ``tagger_dev`` and the ``bench`` extra: where they
are not installed (the runtime image), the command says how to get them in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.cli import app


@pytest.mark.parametrize("module", ["tagger_dev.bench", "tagger_dev.bench_phone", "psutil"])
@pytest.mark.parametrize("phone", [False, True])
def test_bench_without_the_dev_tools_says_how_to_install_them(
    module: str, phone: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == module or m.startswith("tagger_dev.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import raises ModuleNotFoundError
    done = CliRunner().invoke(app, ["bench", str(tmp_path), *(["--phone"] if phone else [])])
    assert done.exit_code == 1
    assert "pip install -e '.[bench]'" in done.output
    assert "Traceback" not in done.output
