"""Free-text queries as a person types them, read into tags, colours and a people count."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from tagger.textquery import ParsedQuery, PeopleRule, QueryParser, QueryTerm, QueryWordsFile


@pytest.fixture(scope="module")
def parser() -> QueryParser:
    return QueryParser.load()


def tags(parsed: ParsedQuery) -> list[str]:
    return [term.tag for term in parsed.terms]


def test_a_blue_car_by_the_beach(parser: QueryParser) -> None:
    parsed = parser.parse("a blue car by the beach")
    assert parsed.terms == (
        QueryTerm(tag="car", words="blue car", colours=("blue",)),
        QueryTerm(tag="beach", words="beach"),
    )
    assert parsed.stop_words == ("a", "by", "the")
    assert parsed.unknown == () and parsed.colours == () and parsed.people is None


@pytest.mark.parametrize(
    ("query", "tag"),
    [
        ("car", "car"),
        ("automobile", "car"),
        ("cars", "car"),
        ("automobiles", "car"),
        ("taxi", "car"),
        ("sports car", "car"),
        ("beach", "beach"),
        ("seaside", "beach"),
        ("shore", "beach"),
        ("seashore", "beach"),
        ("beaches", "beach"),
        ("kid", "person"),
        ("kids", "person"),
        ("man", "person"),
        ("women", "person"),
        ("children", "person"),
        ("golden retriever", "dog"),
        ("golden retrievers", "dog"),
        ("puppies", "dog"),
        ("tabby", "cat"),
        ("mice", "computer mouse"),
        ("geese", "goose"),
        ("wolves", "wolf"),
        ("buses", "bus"),
        ("t-shirt", "t-shirt"),
        ("t shirt", "t-shirt"),
        ("tshirts", "t-shirt"),
        ("plane", "airplane"),
        ("bike", "bicycle"),
        ("oranges", "orange"),  # the fruit; "orange" alone is the colour
    ],
)
def test_synonyms_plurals_and_labels_find_the_tag(
    parser: QueryParser, query: str, tag: str
) -> None:
    parsed = parser.parse(query)
    assert tags(parsed) == [tag], parsed
    assert parsed.unknown == ()


@pytest.mark.parametrize("group", ["animal", "animals", "vehicle", "food", "musical instrument"])
def test_tags_that_are_also_groups_are_searchable(parser: QueryParser, group: str) -> None:
    assert tags(parser.parse(group)) == [group.removesuffix("s")]


def test_words_without_a_tag_are_reported_not_dropped(parser: QueryParser) -> None:
    parsed = parser.parse("sunset")
    assert parsed.unknown == ("sunset",) and parsed.terms == ()
    mixed = parser.parse("a dog at sunset in paris")
    assert tags(mixed) == ["dog"]
    assert mixed.unknown == ("sunset", "paris")
    # the safety score is a filter, not something to search for by name
    assert parser.parse("nsfw").unknown == ("nsfw",)


def test_empty_and_stop_word_only_queries_have_nothing_to_search(parser: QueryParser) -> None:
    for query in ("", "   ", "?!", "the", "photos of the"):
        parsed = parser.parse(query)
        assert parsed.terms == () and parsed.colours == () and parsed.unknown == ()
        assert parsed.people is None


def test_people_counts(parser: QueryParser) -> None:
    two = parser.parse("two people")
    assert two.people == 2 and tags(two) == ["person"]
    assert two.terms[0].words == "two people"
    three = parser.parse("3 people")
    assert three.people == 3 and tags(three) == ["person"]
    assert parser.parse("3 persons").people == 3
    assert parser.parse("two kids and a dog").people == 2
    assert tags(parser.parse("two kids and a dog")) == ["person", "dog"]
    assert parser.parse("two men and three women").people == 5


def test_numbers_count_people_only(parser: QueryParser) -> None:
    dogs = parser.parse("two dogs")
    assert dogs.people is None and tags(dogs) == ["dog"]
    assert "two" in dogs.stop_words and dogs.unknown == ()
    crowd = parser.parse("a group of people")
    assert crowd.people is None and tags(crowd) == ["group", "people"]
    assert parser.parse("people").people is None


def test_colours_bind_to_the_noun_after_them(parser: QueryParser) -> None:
    alone = parser.parse("red")
    assert alone.colours == ("red",) and alone.terms == ()
    assert parser.parse("something red").colours == ("red",)
    bus = parser.parse("red and white bus")
    assert bus.terms == (QueryTerm(tag="bus", words="red white bus", colours=("red", "white")),)
    assert bus.colours == ()
    mixed = parser.parse("red flowers and a dog")
    assert mixed.terms[0].colours == ("red",) and mixed.terms[1].colours == ()
    trailing = parser.parse("dog red")
    assert trailing.terms[0].colours == () and trailing.colours == ("red",)
    assert parser.parse("blue-green car").terms[0].colours == ("blue", "green")


def test_grey_and_gray_are_the_same_colour(parser: QueryParser) -> None:
    assert parser.parse("grey car").terms == (
        QueryTerm(tag="car", words="grey car", colours=("grey",)),
    )
    assert parser.parse("gray car").terms[0].colours == ("grey",)
    assert parser.parse("gray").colours == parser.parse("grey").colours == ("grey",)


def test_phrases_win_over_their_words(parser: QueryParser) -> None:
    """ "red wine" is wine, not a red something; "golden retriever" one dog."""
    wine = parser.parse("red wine")
    assert tags(wine) == ["wine"] and wine.colours == () and wine.terms[0].colours == ()
    assert parser.parse("a golden retriever").terms == (
        QueryTerm(tag="dog", words="golden retriever"),
    )


def test_case_and_punctuation_do_not_matter(parser: QueryParser) -> None:
    plain = parser.parse("a blue car by the beach")
    assert parser.parse("A BLUE Car, by the... Beach!!") == plain
    assert parser.parse("  a   blue\tcar\nby the beach ") == plain
    assert tags(parser.parse("the dog's bowl")) == ["dog", "bowl"]
    assert tags(parser.parse("Dogs\u2019 toys")) == ["dog", "toy"]


def test_a_tag_asked_twice_is_one_term(parser: QueryParser) -> None:
    parsed = parser.parse("a red car and a blue automobile")
    assert tags(parsed) == ["car"]
    assert parsed.terms[0].colours == ("red", "blue")


def test_a_word_with_several_meanings_offers_the_others(parser: QueryParser) -> None:
    horn = parser.parse("horn").terms[0]
    assert horn.tag == "french horn" and horn.alternatives == ("trumpet",)


def test_the_word_list_is_large_and_quick(parser: QueryParser) -> None:
    assert parser.known_words > 4000
    queries = ["two kids with a golden retriever on the red and white beach"] * 2000
    started = time.perf_counter()
    for query in queries:
        parser.parse(query)
    assert time.perf_counter() - started < 5.0  # about 0.1 s; a lookup per word


def _file(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "source": "test",
        "people": PeopleRule(tag="person", counted=("person",)),
        "numbers": {"two": 2},
        "stop_words": ("a",),
        "colours": {"red": "red"},
        "words": {"person": ("person",), "dog": ("dog",)},
    }
    data.update(overrides)
    return data


def test_a_small_word_list_parses_alike() -> None:
    parser = QueryParser(QueryWordsFile.model_validate(_file()))
    assert parser.known_words == 2
    parsed = parser.parse("a red dog and two persons")
    assert tags(parsed) == ["dog"] and parsed.unknown == ("and", "persons")


@pytest.mark.parametrize(
    "overrides",
    [
        {"stop_words": ("dog",)},  # a stop word that is also a search word
        {"words": {"dog": ()}},  # a word without a tag
        {"words": {}},
    ],
)
def test_an_inconsistent_word_list_is_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        QueryWordsFile.model_validate(_file(**overrides))
