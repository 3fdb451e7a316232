"""The packaged query word list: every word leads to a real tag, every key can be typed, and
the committed file is exactly what ``make_query_words.py`` makes from WordNet and the rules."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import tagger
import tagger_dev
from tagger.analyzers.colours import BASIC_COLOURS
from tagger.textquery import tokenise
from tagger.vocabulary import Vocabulary
from tagger_dev import make_query_words
from tagger_dev.make_vocabulary import RulesError

DATA_DIR = Path(tagger.__file__).parent / "data"
GENERATOR = Path(tagger_dev.__file__).parent / "make_query_words.py"
WORDNET = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(
    not (WORDNET / "data.noun").exists(),
    reason="WordNet 3.0 is not installed (apt-get install wordnet-base); it is only needed "
    "to regenerate tagger/data/query_words.json, never at run time",
)


@pytest.fixture(scope="module")
def packaged() -> dict[str, Any]:
    text = resources.files("tagger").joinpath("data", "query_words.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def produced_tags() -> set[str]:
    """Every tag and parent the analysers can put on a photo, but the safety score."""
    vocab = Vocabulary.load()
    names = set(vocab.tag_names) | {p for parents in vocab.tag_parents for p in parents}
    objects = tomllib.loads((DATA_DIR / "object_vocabulary.toml").read_text("utf-8"))
    for label, entry in objects["labels"].items():
        names.update([entry.get("tag", label), *entry.get("parents", [])])
    for rule in objects["counts"]:
        names.update([rule["tag"], *rule["parents"]])
    return names | set(BASIC_COLOURS) | {"colour"}


def test_every_word_leads_to_a_tag_some_analyser_produces(packaged: dict[str, Any]) -> None:
    produced = produced_tags()
    targets = {tag for tags in packaged["words"].values() for tag in tags}
    assert targets <= produced, sorted(targets - produced)[:10]
    assert set(packaged["colours"].values()) == set(BASIC_COLOURS)
    # every tag can be searched by its own name, and means only itself
    for name in produced - set(BASIC_COLOURS):
        assert packaged["words"][" ".join(tokenise(name))] == [name], name


def test_every_key_can_be_typed(packaged: dict[str, Any]) -> None:
    """Keys are stored as the parser tokenises a query, or no query could ever reach them."""
    for section in ("words", "colours", "numbers", "stop_words"):
        for key in packaged[section]:
            assert " ".join(tokenise(key)) == key, (section, key)


@needs_wordnet
def test_generator_reproduces_committed_query_words(packaged: dict[str, Any]) -> None:
    text = make_query_words.render(make_query_words.build(WORDNET))
    committed = resources.files("tagger").joinpath("data", "query_words.json").read_text("utf-8")
    assert text == committed, "re-run python tagger_dev/make_query_words.py and commit"


@needs_wordnet
def test_generator_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "query_words.json"
    stale.write_text("{}", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check", "--output", str(stale)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "stale" in result.stderr


RULES = """
stop_words = ["a"]
[people]
tag = "person"
counted = ["person"]
"""


@needs_wordnet
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[words]\ncar = ["dog"]\n', "name of the tag"),  # a tag's name means that tag only
        ('[words]\nunicorn = ["horn"]\n', "unicorn"),  # words for a tag nothing produces
        ('[hyponyms]\nn02084071 = { lemma = "cat" }\n', "n02084071"),  # the id is dog's
        ('exclude = ["zzz"]\n', "zzz"),  # an exclusion that excludes nothing
        ('[colours]\ngrey = ["car"]\n', "car"),  # a colour spelling that is a tag
    ],
)
def test_generator_refuses_rules_that_do_not_fit(tmp_path: Path, extra: str, message: str) -> None:
    rules = tmp_path / "query_rules.toml"
    top, tables = (extra, "") if extra.startswith("exclude") else ("", extra)
    rules.write_text(top + RULES + tables, encoding="utf-8")
    with pytest.raises(RulesError, match=message):
        make_query_words.build(WORDNET, query_rules_path=rules)
