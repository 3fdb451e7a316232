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


def _json_lines(stdout: str) -> dict[str, dict]:  # type: ignore[type-arg]
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {Path(line["ref"]).stem: line for line in lines}


def test_the_default_tag_prints_people_colours_objects_and_safety(
    env: Settings,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
) -> None:
    folder = write_photos(sample_photos)["astronaut"].parent
    runner = CliRunner()
    table = runner.invoke(app, ["tag", str(folder)], env={"COLUMNS": "400"})
    assert table.exit_code == 0, table.output
    header = next(line for line in table.stdout.splitlines() if "photo" in line)
    assert all(column in header for column in ("tags", "objects", "colours", "nsfw"))
    astronaut_row = next(line for line in table.stdout.splitlines() if "astronaut.jpg" in line)
    assert "person" in astronaut_row and "person x1" in astronaut_row

    results = _json_lines(
        runner.invoke(app, ["show", *map(str, folder.iterdir()), "--json"]).stdout
    )
    astronaut, chelsea = results["astronaut"], results["chelsea"]
    assert "person" in [tag["name"] for tag in astronaut["tags"]]
    assert astronaut["counts"]["person"] == 1 and astronaut["objects"][0]["label"] == "person"
    assert 0.0 <= astronaut["safety"]["nsfw"] < 0.2
    colour_tags = [t["name"] for t in chelsea["tags"] if t["parents"] == ["colour"]]
    assert colour_tags and colour_tags[0] in {"brown", "orange"}
    assert set(astronaut["analyzers"]) == {"classify", "objects", "colours", "safety"}


def test_flagged_and_safe_search_follow_the_safety_threshold(
    env: Settings,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = write_photos(sample_photos)["astronaut"].parent
    runner = CliRunner()
    tagged = _json_lines(runner.invoke(app, ["tag", str(folder), "--json"]).stdout)
    scores = {name: line["safety"]["nsfw"] for name, line in tagged.items()}

    default = runner.invoke(app, ["flagged"])
    assert default.exit_code == 0 and default.stdout == ""  # everyday photos: none flagged
    lowest = min(scores.values())
    listed = runner.invoke(app, ["flagged", "--threshold", str(lowest)]).stdout.splitlines()
    shown = [float(line.split("\t")[0]) for line in listed]
    assert len(listed) == len(scores) and shown == sorted(shown, reverse=True)

    # a strict threshold: the riskiest photo is flagged and left out of a safe search
    riskiest = max(scores, key=lambda name: scores[name])
    monkeypatch.setenv("TAGGER_SAFETY__THRESHOLD", str(scores[riskiest]))
    flagged = runner.invoke(app, ["flagged"]).stdout
    assert riskiest in flagged
    everyone = runner.invoke(app, ["search", "colour"]).stdout
    safe = runner.invoke(app, ["search", "colour", "--safe"]).stdout
    assert riskiest in everyone and riskiest not in safe
    assert len(safe.splitlines()) == len(everyone.splitlines()) - 1


def test_new_analysers_run_alone_on_photos_an_older_set_tagged(
    env: Settings,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_photos({"chelsea": sample_photos["chelsea"]})["chelsea"]
    runner = CliRunner()
    monkeypatch.setenv("TAGGER_ANALYZERS", "classify")
    first = _json_lines(runner.invoke(app, ["tag", str(path), "--json"]).stdout)["chelsea"]
    assert set(first["analyzers"]) == {"classify"} and first["colours"] is None
    monkeypatch.delenv("TAGGER_ANALYZERS")
    second = _json_lines(runner.invoke(app, ["tag", str(path), "--json"]).stdout)["chelsea"]
    assert set(second["analyzers"]) == {"classify", "objects", "colours", "safety"}
    assert second["analyzers"]["classify"] == first["analyzers"]["classify"]
    assert second["classes"] == first["classes"] and second["colours"] is not None
    third = _json_lines(runner.invoke(app, ["tag", str(path), "--json"]).stdout)["chelsea"]
    assert third["tagged_at"] == second["tagged_at"]  # current now: read back, not re-run


def test_similar_finds_the_mirrored_cat_first(
    env: Settings,
    photos_with_mirrored_cat: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
) -> None:
    paths = write_photos(photos_with_mirrored_cat)
    runner = CliRunner()
    assert runner.invoke(app, ["tag", str(paths["chelsea"].parent)]).exit_code == 0
    found = runner.invoke(app, ["similar", str(paths["chelsea"]), "--k", "3"])
    assert found.exit_code == 0, found.output
    first = found.stdout.splitlines()[0].split("\t")
    assert first[1].endswith("mirrored-cat.jpg") and "cat" in first[2]
    assert len(found.stdout.splitlines()) == 3
    untagged = runner.invoke(app, ["similar", "/nowhere/else.jpg"])
    assert untagged.exit_code == 1 and "no signature" in untagged.output
