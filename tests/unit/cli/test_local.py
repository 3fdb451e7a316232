"""`tagger tag`, `show`, `search` and `eval` as a user runs them, on the embedded defaults."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.cli import app
from tagger.config import Settings


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TAGGER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TAGGER_MODEL_DIR", str(settings.model_dir))
    return settings


def test_tag_a_folder_then_show_and_search(
    env: Settings,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
) -> None:
    paths = write_photos(sample_photos)
    (paths["chelsea"].parent / "notes.txt").write_text("not a photo, not picked up")
    runner = CliRunner()
    result = runner.invoke(app, ["tag", str(paths["chelsea"].parent), "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 4
    chelsea = next(line for line in lines if line["ref"].endswith("chelsea.jpg"))
    assert chelsea["status"] == "tagged"
    assert chelsea["tags"][0]["name"] == "cat" and "animal" in chelsea["tags"][0]["parents"]
    assert {"ref", "status", "model_version", "width", "height", "classes", "tags"} <= set(chelsea)
    assert (env.data_dir / "tags.db").exists()

    shown = runner.invoke(app, ["show", str(paths["chelsea"]), "--json"])
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["tags"][0]["name"] == "cat"

    found = runner.invoke(app, ["search", "cat", "animal"])
    assert found.exit_code == 0
    assert found.stdout.split("\t")[1].strip().endswith("chelsea.jpg")
    assert "coffee.jpg" not in found.stdout


def test_a_second_run_reads_back_instead_of_retagging(
    env: Settings,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
) -> None:
    path = write_photos({"chelsea": sample_photos["chelsea"]})["chelsea"]
    runner = CliRunner()
    first = json.loads(runner.invoke(app, ["tag", str(path), "--json"]).stdout.splitlines()[0])
    second = json.loads(runner.invoke(app, ["tag", str(path), "--json"]).stdout.splitlines()[0])
    assert second["tagged_at"] == first["tagged_at"]
    assert second["tags"] == first["tags"]


def test_eval_prints_accuracy_of_labelled_photos(
    env: Settings, sample_photos: dict[str, bytes], tmp_path: Path
) -> None:
    folder = tmp_path / "labelled"
    folder.mkdir()
    (folder / "n02123045_chelsea.JPEG").write_bytes(sample_photos["chelsea"])  # tabby
    (folder / "n03297495_espresso.JPEG").write_bytes(sample_photos["coffee"])  # espresso maker
    result = CliRunner().invoke(app, ["eval", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["photos"] == 2
    assert report["top5"] >= 0.5
    assert report["images_per_second"] > 0


def test_bad_paths_fail_alone_with_typed_errors(
    env: Settings,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
    tmp_path: Path,
) -> None:
    import os

    ok = write_photos({"chelsea": sample_photos["chelsea"]})["chelsea"]
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    args = ["tag", str(loop), str(fifo), str(ok), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    by_name = {Path(line["ref"]).name: line for line in lines}
    assert by_name["chelsea.jpg"]["status"] == "tagged"
    assert by_name["loop.jpg"]["status"] == "failed"
    assert by_name["loop.jpg"]["error"] == "invalid_ref"
    assert by_name["pipe.jpg"]["error"] == "not_an_image"
    assert not by_name["pipe.jpg"]["transient"]
