"""Mistakes a user makes get one clear line and a non-zero exit, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tagger", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


def test_bad_configuration_names_the_variable(tmp_path: Path) -> None:
    done = run("search", "cat", TAGGER_BATCH_SIZE="many", TAGGER_DATA_DIR=str(tmp_path))
    assert done.returncode == 2
    assert "invalid configuration" in done.stderr
    assert "TAGGER_BATCH_SIZE" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_model_that_may_not_be_built_is_one_line(tmp_path: Path) -> None:
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    done = run(
        "tag",
        str(photo),
        TAGGER_MODEL_DIR=str(tmp_path / "models"),
        TAGGER_DATA_DIR=str(tmp_path / "data"),
        TAGGER_MODEL__BUILD_IF_MISSING="false",
    )
    assert done.returncode == 1
    assert "building on first use is off" in done.stderr and "Traceback" not in done.stderr
