"""Free-text photo queries → tags: ``"a blue car by the beach"`` → ``car`` (blue) + ``beach``.

Photos carry the project's own tags (``car``, ``dog``, ``beach``, colour names), while people
type whatever word comes to mind ("automobiles", "golden retriever", "seaside", "two kids").
The words that mean each tag are worked out ahead of time from WordNet and hand-written rules
by ``tagger_dev/make_query_words.py`` into ``tagger/data/query_words.json``; at run time a
query only needs a dictionary lookup per word, no WordNet and no model.

The parser reports what it did with every word: a word that names no tag is returned in
:attr:`ParsedQuery.unknown` so the user reads "no tag for 'sunset'" instead of getting photos
that silently ignored half of the query, and dropped words are listed in
:attr:`ParsedQuery.stop_words`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, model_validator

DATA_PACKAGE = "tagger"
DATA_FILE = ("data", "query_words.json")

# Letters and digits, with hyphens and apostrophes inside a word ("t-shirt", "jack-o'-lantern");
# the generator tokenises its keys with the same expression, so every key can be typed.
_TOKEN = re.compile(r"[^\W_]+(?:['-]+[^\W_]+)*")
_POSSESSIVE = "'s"
_AND = "and"  # "red and white bus": colours joined by "and" bind to the same noun


def tokenise(text: str) -> tuple[str, ...]:
    """The words of ``text``, lower-cased, with a possessive ``'s`` dropped.

    Punctuation separates words and is otherwise ignored, so ``"Dog's toys!"`` and
    ``"dog toys"`` are the same query.
    """
    tokens = _TOKEN.findall(text.replace("\u2019", "'").lower())
    return tuple(t[: -len(_POSSESSIVE)] if t.endswith(_POSSESSIVE) else t for t in tokens)


class QueryTerm(BaseModel):
    """One thing the photos must show: a tag, the query words it was read from (for
    messages such as "no photos of 'blue cars'"), and the colours the query gave it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: str = Field(min_length=1)
    words: str = Field(min_length=1, description="the query's words for this term, as typed")
    colours: tuple[str, ...] = Field(
        default=(), description="colour tags of the colour words just before the noun"
    )
    alternatives: tuple[str, ...] = Field(
        default=(),
        description="other tags the same word names, less likely ones ('horn': trumpet)",
    )


class ParsedQuery(BaseModel):
    """Everything a query asked for, and what was left over, so the caller can search and
    tell the user how the words were read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    terms: tuple[QueryTerm, ...] = ()
    colours: tuple[str, ...] = Field(
        default=(), description="colours not bound to a noun ('something red')"
    )
    people: int | None = Field(
        default=None, ge=0, description="how many people, from 'two people' or '3 kids'"
    )
    unknown: tuple[str, ...] = Field(default=(), description="words that name no tag")
    stop_words: tuple[str, ...] = Field(default=(), description="words dropped as meaningless")


class PeopleRule(BaseModel):
    """Which words take a number ("two people"), and the tag such a term becomes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: str = Field(min_length=1)
    counted: tuple[str, ...]


class QueryWordsFile(BaseModel):
    """The packaged word list, validated at load so a truncated or hand-edited file fails
    loudly instead of quietly reading queries wrong."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    people: PeopleRule
    numbers: dict[str, int]
    stop_words: tuple[str, ...]
    colours: dict[str, str] = Field(min_length=1)
    words: dict[str, tuple[str, ...]] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> QueryWordsFile:
        empty = [word for word, tags in self.words.items() if not tags]
        if empty:
            raise ValueError(f"words without a tag: {empty[:5]}")
        clashes = set(self.stop_words) & (set(self.words) | set(self.colours) | set(self.numbers))
        if clashes:
            raise ValueError(f"stop words that also mean something: {sorted(clashes)[:5]}")
        return self


class _Pending:
    """Colour words waiting for the noun after them."""

    def __init__(self) -> None:
        self.colours: list[str] = []
        self.words: list[str] = []

    def add(self, colour: str, word: str) -> None:
        self.colours.append(colour)
        self.words.append(word)

    def take(self) -> tuple[list[str], list[str]]:
        colours, words = self.colours, self.words
        self.colours, self.words = [], []
        return colours, words


class QueryParser:
    """Reads free-text queries with the packaged word list; create one and reuse it."""

    def __init__(self, data: QueryWordsFile) -> None:
        self._words: Mapping[str, tuple[str, ...]] = dict(data.words)
        self._colours: Mapping[str, str] = dict(data.colours)
        self._numbers: Mapping[str, int] = dict(data.numbers)
        self._stop_words = frozenset(data.stop_words)
        self._person_tag = data.people.tag
        self._counted = frozenset(data.people.counted)
        self._longest = max(len(word.split(" ")) for word in self._words)
        # Every word that appears in some key: a hyphenated token outside it is split
        # ("blue-green car" → "blue", "green", "car").
        self._known_tokens = frozenset(
            token
            for vocabulary in (self._words, self._colours, self._numbers, self._stop_words)
            for key in vocabulary
            for token in key.split(" ")
        )

    @classmethod
    def load(cls) -> QueryParser:
        """Read the word list shipped inside the package (works from a wheel or a zip)."""
        resource = resources.files(DATA_PACKAGE).joinpath(*DATA_FILE)
        return cls(QueryWordsFile.model_validate_json(resource.read_bytes()))

    @property
    def known_words(self) -> int:
        """How many words and phrases name a tag (plurals and spellings counted apart)."""
        return len(self._words)

    def _tokens(self, text: str) -> list[str]:
        tokens: list[str] = []
        for token in tokenise(text):
            if "-" in token and token not in self._known_tokens:
                tokens.extend(tokenise(token.replace("-", " ")))
            else:
                tokens.append(token)
        return tokens

    def _match(self, tokens: Sequence[str], start: int) -> int:
        """Length of the longest word or phrase of the list starting at ``start``, or 0."""
        for length in range(min(self._longest, len(tokens) - start), 0, -1):
            if " ".join(tokens[start : start + length]) in self._words:
                return length
        return 0

    def _count(self, token: str) -> int | None:
        if token.isdigit():
            return int(token)
        return self._numbers.get(token)

    def parse(self, text: str) -> ParsedQuery:
        """Split ``text`` into tag terms, free colours, a people count and leftovers.

        Phrases win over single words ("golden retriever" is a dog, not a colour and a
        retriever); a colour word binds to the noun right after it ("blue car"), as do
        several ("red and white bus"); one with no noun after it asks for that colour anywhere
        ("something red"). A number before a person word asks for that many people.
        """
        tokens = self._tokens(text)
        terms: dict[str, QueryTerm] = {}
        free: list[str] = []
        unknown: list[str] = []
        stop: list[str] = []
        people: int | None = None
        pending = _Pending()

        def add_term(tags: Sequence[str], words: list[str]) -> None:
            colours, colour_words = pending.take()
            tag, *alternatives = tags
            term = QueryTerm(
                tag=tag,
                words=" ".join([*colour_words, *words]),
                colours=tuple(dict.fromkeys(colours)),
                alternatives=tuple(alternatives),
            )
            known = terms.get(tag)
            if known is not None:  # "car ... automobile": one term, the colours of both
                term = known.model_copy(
                    update={
                        "colours": tuple(dict.fromkeys([*known.colours, *term.colours])),
                        "alternatives": tuple(
                            dict.fromkeys([*known.alternatives, *term.alternatives])
                        ),
                    }
                )
            terms[tag] = term

        def release() -> None:
            colours, _ = pending.take()
            free.extend(colours)

        at = 0
        while at < len(tokens):
            token = tokens[at]
            length = self._match(tokens, at)
            if length > 1 or (length == 1 and token not in self._colours):
                add_term(self._words[" ".join(tokens[at : at + length])], tokens[at : at + length])
                at += length
                continue
            if token in self._colours:
                pending.add(self._colours[token], token)
                at += 1
                continue
            count = self._count(token)
            if count is not None:
                counted = self._match(tokens, at + 1)
                noun = tokens[at + 1 : at + 1 + counted]
                if counted and self._words[" ".join(noun)][0] in self._counted:
                    release()
                    people = count if people is None else people + count
                    add_term((self._person_tag,), [token, *noun])
                    at += 1 + counted
                    continue
                release()
                stop.append(token)  # a count of anything but people cannot be searched
            elif token in self._stop_words:
                next_is_colour = at + 1 < len(tokens) and tokens[at + 1] in self._colours
                if not (token == _AND and pending.colours and next_is_colour):
                    release()
                stop.append(token)
            else:
                release()
                unknown.append(token)
            at += 1
        release()
        return ParsedQuery(
            terms=tuple(terms.values()),
            colours=tuple(dict.fromkeys(free)),
            people=people,
            unknown=tuple(dict.fromkeys(unknown)),
            stop_words=tuple(stop),
        )
