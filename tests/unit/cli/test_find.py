"""`tagger search "…"`, `similar` and `recommend` as a user runs them after `tagger tag` of a
folder, on the embedded defaults (SQLite with sqlite-vec)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.cli import app
from tagger.config import Settings


@pytest.fixture
def library(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    photos_with_mirrored_cat: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
) -> dict[str, Path]:
    monkeypatch.setenv("TAGGER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TAGGER_MODEL_DIR", str(settings.model_dir))
    paths = write_photos(photos_with_mirrored_cat)
    tagged = CliRunner().invoke(app, ["tag", str(paths["chelsea"].parent)])
    assert tagged.exit_code == 0, tagged.output
    return paths


def refs(stdout: str) -> list[str]:
    return [Path(line.split("\t")[1]).stem for line in stdout.splitlines() if "\t" in line]


def test_text_search_takes_synonyms_plurals_and_reports_unknown_words(
    library: dict[str, Path],
) -> None:
    runner = CliRunner()
    cats = runner.invoke(app, ["search", "two", "kittens", "at", "sunset"])
    assert cats.exit_code == 0, cats.output
    assert sorted(refs(cats.stdout)) == ["chelsea", "mirrored-cat"]
    assert "no tag for 'sunset'" in cats.stderr
    assert "[cat" in cats.stdout  # each hit says why it matched
    person = runner.invoke(app, ["search", "a man", "--json"])
    hits = [json.loads(line) for line in person.stdout.splitlines()]
    assert [Path(hit["ref"]).stem for hit in hits] == ["astronaut"]
    assert hits[0]["why"][0]["name"] == "person"
    nothing = runner.invoke(app, ["search", "the sunset"])
    assert nothing.exit_code == 1 and "nothing to search for" in nothing.stderr
    # filters: nobody in the cat photos
    alone = runner.invoke(app, ["search", "animal", "--max-people", "0"])
    assert sorted(refs(alone.stdout)) == ["chelsea", "mirrored-cat"]


def test_recommend_leaves_out_liked_and_seen_photos(library: dict[str, Path]) -> None:
    runner = CliRunner()
    found = runner.invoke(app, ["recommend", str(library["chelsea"]), "--k", "3"])
    assert found.exit_code == 0, found.output
    shown = refs(found.stdout)
    assert shown[0] == "mirrored-cat" and "chelsea" not in shown and len(shown) == 3
    seen = runner.invoke(
        app, ["recommend", str(library["chelsea"]), "-x", str(library["mirrored-cat"])]
    )
    assert "mirrored-cat" not in refs(seen.stdout)
    missing = runner.invoke(app, ["recommend", str(library["chelsea"]), "/nowhere/x.jpg"])
    assert "not tagged yet" in missing.stderr and refs(missing.stdout)
