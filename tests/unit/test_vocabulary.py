"""The ImageNet → friendly tag vocabulary: coverage, the mappings users rely on, and the
summing/threshold arithmetic that turns a split prediction into one confident tag."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib import resources
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from pydantic import ValidationError

import tagger
import tagger_dev
from tagger.vocabulary import Vocabulary, VocabularyEntry, VocabularyFile

DATA_DIR = Path(tagger.__file__).parent / "data"
GENERATOR = Path(tagger_dev.__file__).parent / "make_vocabulary.py"
WORDNET = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(
    not (WORDNET / "data.noun").exists(),
    reason="WordNet 3.0 is not installed (apt-get install wordnet-base); it is only needed "
    "to regenerate tagger/data/vocabulary.json, never at run time",
)


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.load()


def index_of(vocab: Vocabulary, label: str) -> int:
    matches = [i for i, name in enumerate(vocab.labels) if name == label]
    assert len(matches) == 1, f"{label!r} is not a unique ImageNet label"
    return matches[0]


def probs_with(vocab: Vocabulary, **by_label: float) -> np.ndarray:
    """A probability vector with the given mass on named classes and what is left on
    *abacus*, a class that shares its tag with no other."""
    probs = np.zeros(len(vocab))
    for label, p in by_label.items():
        probs[index_of(vocab, label.replace("_", " "))] = p
    probs[index_of(vocab, "abacus")] += 1.0 - probs.sum()
    return probs


# --- coverage ---------------------------------------------------------------------------


def test_every_imagenet_class_has_a_tag_in_model_output_order(vocab: Vocabulary) -> None:
    rows = [
        line.split("\t")
        for line in (DATA_DIR / "imagenet_classes.tsv").read_text(encoding="utf-8").splitlines()
    ]
    assert len(vocab) == 1000
    assert vocab.wnids == [wnid for _, wnid, _ in rows]
    assert vocab.labels == [label for _, _, label in rows]
    for i in range(len(vocab)):
        entry = vocab.entry(i)
        assert entry.tag.strip() and entry.tag == entry.tag.lower(), entry
        assert all(p.strip() and p == p.lower() for p in entry.parents), entry


def test_most_classes_have_a_parent_and_tags_merge_classes(vocab: Vocabulary) -> None:
    with_parent = sum(1 for i in range(len(vocab)) if vocab.entry(i).parents)
    assert with_parent >= 800
    # Merging is the point: far fewer tags than classes, dogs being the biggest family.
    assert len(vocab.tag_names) < 700
    dogs = sum(1 for i in range(len(vocab)) if vocab.entry(i).tag == "dog")
    assert dogs >= 110


# --- the mappings named in the issue ----------------------------------------------------


@pytest.mark.parametrize(
    ("label", "tag", "parent"),
    [
        ("tabby", "cat", "animal"),
        ("tiger cat", "cat", "animal"),
        ("Persian cat", "cat", "animal"),
        ("Siamese cat", "cat", "animal"),
        ("Egyptian cat", "cat", "animal"),
        ("sports car", "car", "vehicle"),
        ("convertible", "car", "vehicle"),
        ("cab", "car", "vehicle"),
        ("racer", "car", "vehicle"),
        ("limousine", "car", "vehicle"),
        ("seashore", "beach", "landscape"),
        ("sandbar", "beach", "landscape"),
        ("espresso", "coffee", "drink"),
        ("cup", "coffee", "drink"),
        ("golden retriever", "dog", "animal"),
        ("Labrador retriever", "dog", "animal"),
        ("Chihuahua", "dog", "animal"),
        ("German shepherd", "dog", "animal"),
        ("goldfinch", "bird", "animal"),
        ("robin", "bird", "animal"),
        ("magpie", "bird", "animal"),
        ("house finch", "bird", "animal"),
        ("flamingo", "bird", "animal"),
        ("macaw", "parrot", "bird"),
        ("coffee mug", "mug", "tableware"),
        ("Granny Smith", "apple", "fruit"),
        ("pizza", "pizza", "food"),
        ("acoustic guitar", "guitar", "musical instrument"),
        ("laptop", "laptop", "electronics"),
        ("alp", "mountain", "landscape"),
        ("daisy", "daisy", "flower"),
        ("agaric", "mushroom", "fungus"),
    ],
)
def test_friendly_tag_and_parent(vocab: Vocabulary, label: str, tag: str, parent: str) -> None:
    entry = vocab.entry(index_of(vocab, label))
    assert entry.tag == tag
    assert parent in entry.parents


def test_drinks_are_not_also_food(vocab: Vocabulary) -> None:
    """WordNet files beverages under food; the vocabulary stops that walk at 'drink'."""
    for label in ("espresso", "red wine", "eggnog"):
        assert vocab.entry(index_of(vocab, label)).parents == ("drink",)


# --- summing and thresholds -------------------------------------------------------------


def test_split_cat_prediction_becomes_one_cat_tag(vocab: Vocabulary) -> None:
    probs = probs_with(vocab, tabby=0.5, tiger_cat=0.3, Egyptian_cat=0.1, golden_retriever=0.06)
    tags = vocab.tags(probs, threshold=0.1)
    assert [t.name for t in tags] == ["cat"]
    assert tags[0].score == pytest.approx(0.9, abs=1e-9)
    assert tags[0].parents == ["animal"]
    names = [t.name for t in vocab.tags(probs, threshold=0.05)]
    assert names[:2] == ["cat", "dog"]


def test_tag_passes_threshold_though_no_single_class_does(vocab: Vocabulary) -> None:
    probs = np.zeros(len(vocab))
    for label in ("beagle", "basset", "bloodhound", "Walker hound"):
        probs[index_of(vocab, label)] = 0.04
    probs[index_of(vocab, "tabby")] = 0.09
    assert all(c.score < 0.1 for c in vocab.classes(probs, top_k=5))
    tags = vocab.tags(probs, threshold=0.1)
    assert [t.name for t in tags] == ["dog"]
    assert tags[0].score == pytest.approx(0.16)


def test_tag_scores_are_sums_and_sorted(vocab: Vocabulary) -> None:
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.full(len(vocab), 0.05))
    tags = vocab.tags(probs, threshold=0.0)
    scores = [t.score for t in tags]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0)
    for tag in tags[:20]:
        members = [i for i in range(len(vocab)) if vocab.entry(i).tag == tag.name]
        assert tag.score == pytest.approx(float(probs[members].sum()))
        assert tag.parents == list(vocab.entry(members[0]).parents)


def test_threshold_bounds(vocab: Vocabulary) -> None:
    probs = probs_with(vocab, tabby=0.7, sports_car=0.3)
    assert {t.name for t in vocab.tags(probs, threshold=0.0)} == {"cat", "car"}
    assert [t.name for t in vocab.tags(probs, threshold=0.7)] == ["cat"]
    assert vocab.tags(probs, threshold=0.71) == []


def test_float32_probabilities_from_the_model_are_accepted(vocab: Vocabulary) -> None:
    probs = probs_with(vocab, tabby=0.5, tiger_cat=0.4).astype(np.float32)
    assert vocab.tags(probs, threshold=0.5)[0].name == "cat"


# --- top-k classes ----------------------------------------------------------------------


def test_top_k_classes_best_first(vocab: Vocabulary) -> None:
    probs = probs_with(vocab, tabby=0.5, tiger_cat=0.3, Egyptian_cat=0.1, golden_retriever=0.06)
    top = vocab.classes(probs, top_k=3)
    assert [c.label for c in top] == ["tabby", "tiger cat", "Egyptian cat"]
    assert top[0].wnid == "n02123045"
    assert top[0].score == pytest.approx(0.5)
    assert vocab.classes(probs, top_k=0) == []
    assert len(vocab.classes(probs, top_k=5000)) == 1000


def test_ties_keep_model_order(vocab: Vocabulary) -> None:
    probs = np.full(len(vocab), 1 / len(vocab))
    assert [c.wnid for c in vocab.classes(probs, top_k=3)] == vocab.wnids[:3]


def test_postprocess_returns_classes_and_tags(vocab: Vocabulary) -> None:
    probs = probs_with(vocab, espresso=0.6, cup=0.3)
    classes, tags = vocab.postprocess(probs, top_k=2, threshold=0.2)
    assert [c.label for c in classes] == ["espresso", "cup"]
    assert [(t.name, t.parents) for t in tags] == [("coffee", ["drink"])]
    assert tags[0].score == pytest.approx(0.9)


@pytest.mark.parametrize("shape", [(999,), (1001,), (1, 1000), (2, 1000)])
def test_wrong_shape_is_refused(vocab: Vocabulary, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="one probability per class"):
        vocab.tags(np.zeros(shape), threshold=0.1)
    with pytest.raises(ValueError, match="one probability per class"):
        vocab.classes(np.zeros(shape), top_k=1)


# --- the data file's own checks ---------------------------------------------------------


def _entry(index: int, tag: str, parents: tuple[str, ...] = ()) -> VocabularyEntry:
    return VocabularyEntry(
        index=index, wnid=f"n{index:08d}", label=f"c{index}", tag=tag, parents=parents
    )


def test_small_vocabulary_arithmetic() -> None:
    vocab = Vocabulary([_entry(0, "a", ("x",)), _entry(1, "b"), _entry(2, "a", ("x",))])
    tags = vocab.tags(np.array([0.3, 0.4, 0.3]), threshold=0.35)
    assert [(t.name, t.parents) for t in tags] == [("a", ["x"]), ("b", [])]
    assert tags[0].score == pytest.approx(0.6)


@pytest.mark.parametrize(
    "entries",
    [
        [_entry(1, "a")],  # indices must be 0..n-1
        [_entry(0, "a", ("x",)), _entry(1, "a", ("y",))],  # one tag, one set of parents
        [_entry(0, "a", ("a",))],  # a tag is not its own parent
        [],
    ],
)
def test_inconsistent_vocabulary_is_refused(entries: list[VocabularyEntry]) -> None:
    with pytest.raises(ValidationError):
        VocabularyFile(source="test", classes=tuple(entries))


# --- the generator reproduces the committed file -----------------------------------------


def _generator(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import the script by path, as it runs: standard library only, without the project."""
    spec = importlib.util.spec_from_file_location("make_vocabulary", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look themselves up here
    spec.loader.exec_module(module)
    return module


@needs_wordnet
def test_generator_reproduces_committed_vocabulary(tmp_path: Path) -> None:
    out = tmp_path / "vocabulary.json"
    subprocess.run(
        [sys.executable, str(GENERATOR), "--wordnet-dir", str(WORDNET), "--output", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    committed = resources.files("tagger").joinpath("data", "vocabulary.json").read_bytes()
    assert out.read_bytes() == committed, "re-run tagger_dev/make_vocabulary.py and commit"


@needs_wordnet
def test_generator_refuses_a_mistyped_category(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = _generator(monkeypatch)
    rules = tmp_path / "rules.toml"
    rules.write_text(
        "[categories]\n"
        'n02084071 = { lemma = "dog", tag = "dog" }\n'
        'n02121808 = { lemma = "dog", tag = "cat" }\n',  # this id is domestic_cat
        encoding="utf-8",
    )
    with pytest.raises(generator.RulesError, match="n02121808"):
        generator.build(WORDNET, DATA_DIR / "imagenet_classes.tsv", rules)


@needs_wordnet
def test_generator_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "vocabulary.json"
    stale.write_text("{}", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check", "--output", str(stale)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "stale" in result.stderr
