"""Reading the store the way people ask: free text, "more like this", "more of what I liked".

- **Text**: the query's words become tags through the vocabulary's word list
  (:mod:`tagger.textquery`: friendly tags, their WordNet synonyms and plurals); a colour word
  binds to the noun after it, and since the colours analyser tags the colour of a photo's
  *subject* (its largest object), "blue car" asks for photos tagged ``car`` whose subject is
  ``blue``. A word the vocabulary does not know still matches when some photo has it as a tag
  (a word read by OCR, a custom label, a class id); words nothing matches are returned in
  ``unknown``, never dropped silently.
- **Similar**: the nearest signatures (:mod:`tagger.similarity`) through the store's vector
  index.
- **Recommend**: candidates near the liked photos' mean signature and near each liked photo,
  ranked by similarity to the whole profile and re-ordered by maximal marginal relevance
  (Carbonell & Goldstein 1998), so one liked dog does not return twenty near-copies of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from tagger.store import Match, SearchFilters, SearchHit, TagStore
from tagger.textquery import ParsedQuery, QueryParser

FloatArray = npt.NDArray[np.float32]

_PER_LIKED = 20
"""Neighbours of each liked photo added to the candidates, so a profile mixing dogs and
beaches still finds dogs and beaches and not only what lies between them."""
_MAX_LIKED = 50
"""Liked photos queried one by one; past this, only the profile's mean is queried."""


class TextSearch(BaseModel):
    """A text query's answer: what its words were taken to mean, and the hits."""

    model_config = ConfigDict(frozen=True)

    query: str
    tags: list[str] = Field(description="tags every hit has, from the query's nouns")
    colours: list[str] = Field(description="subject colours every hit has")
    people: int | None = Field(default=None, description="exact person count asked for")
    unknown: list[str] = Field(description="words no tag matches ('no tag for ...')")
    hits: list[SearchHit]


class Recommendation(BaseModel):
    """Recommended photos, and the liked refs that could not be used (not tagged yet)."""

    model_config = ConfigDict(frozen=True)

    hits: list[SearchHit]
    missing: list[str] = Field(default_factory=list)


class NothingToSearch(ValueError):
    """The query has no word that names a tag or colour; the message lists what it had."""


class Searcher:
    """Text search, similar and recommend over one store; the client, the CLI and the API all
    go through it, so they agree."""

    def __init__(self, store: TagStore, parser: QueryParser | None = None) -> None:
        self.store = store
        self._parser = parser

    @property
    def parser(self) -> QueryParser:
        if self._parser is None:
            self._parser = QueryParser.load()
        return self._parser

    def parse(self, text: str) -> ParsedQuery:
        return self.parser.parse(text)

    def text(self, query: str, limit: int = 50, filters: SearchFilters | None = None) -> TextSearch:
        """Photos matching a free-text query and ``filters``, best first."""
        parsed = self.parse(query)
        stored = self.store.existing_tags(parsed.unknown) if parsed.unknown else set()
        unknown = [word for word in parsed.unknown if word not in stored]
        tags = list(
            dict.fromkeys(
                [*(term.tag for term in parsed.terms), *(w for w in parsed.unknown if w in stored)]
            )
        )
        colours = list(
            dict.fromkeys([*(c for term in parsed.terms for c in term.colours), *parsed.colours])
        )
        base = filters or SearchFilters()
        if not tags and not colours and not base.required():
            words = ", ".join(repr(word) for word in unknown) or "none"
            raise NothingToSearch(
                f"nothing to search for in {query!r}: no word names a tag (unknown: {words})"
            )
        people = parsed.people
        merged = base.model_copy(
            update={
                "colours": (*base.colours, *colours),
                "min_people": people if people is not None else base.min_people,
                "max_people": people if people is not None else base.max_people,
            }
        )
        hits = self.store.search(tags, limit=limit, filters=merged)
        if people is not None:
            hits = [
                hit.model_copy(
                    update={"why": [*hit.why, Match(kind="people", name="person", score=people)]}
                )
                for hit in hits
            ]
        return TextSearch(
            query=query,
            tags=tags,
            colours=colours,
            people=people,
            unknown=unknown,
            hits=hits,
        )

    def similar(
        self, ref: str, k: int = 20, filters: SearchFilters | None = None
    ) -> list[SearchHit]:
        return self.store.similar(ref, k=k, filters=filters)

    def recommend(
        self,
        liked: Sequence[str],
        k: int = 20,
        exclude: Sequence[str] = (),
        diversity: float = 0.3,
        filters: SearchFilters | None = None,
    ) -> Recommendation:
        """Up to ``k`` photos for someone who liked ``liked``, none of ``liked`` or
        ``exclude``; ``diversity`` 0 ranks by similarity alone, 1 by novelty alone."""
        if not 0 <= diversity <= 1:
            raise ValueError(f"diversity must be within 0..1, not {diversity}")
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        found = self.store.signatures(list(dict.fromkeys(liked)))
        missing = [ref for ref in liked if ref not in found]
        if not found:
            raise ValueError("none of the liked photos is tagged with a signature yet")
        vectors = _same_size(found)
        profile = _unit(np.mean(np.stack(list(vectors.values())), axis=0))
        skip = [*found, *exclude]
        pool = max(10 * k, 100)
        candidates = {hit.ref: hit for hit in self.store.nearest(profile, pool, filters, skip)}
        for vector in list(vectors.values())[:_MAX_LIKED]:
            for hit in self.store.nearest(vector, _PER_LIKED, filters, skip):
                candidates.setdefault(hit.ref, hit)
        stored = self.store.signatures(list(candidates))
        refs = [ref for ref in candidates if len(stored.get(ref, ())) == len(profile)]
        if not refs:
            return Recommendation(hits=[], missing=missing)
        matrix = np.asarray([stored[ref] for ref in refs], np.float32)
        relevance = matrix @ profile
        chosen = _mmr(matrix, relevance, k, diversity)
        hits = [
            candidates[refs[i]].model_copy(
                update={
                    "score": round(float(relevance[i]), 6),
                    "why": [Match(kind="similarity", name="profile", score=float(relevance[i]))],
                }
            )
            for i in chosen
        ]
        return Recommendation(hits=hits, missing=missing)


def _mmr(matrix: FloatArray, relevance: FloatArray, k: int, diversity: float) -> list[int]:
    """Greedy maximal marginal relevance: each pick maximises
    ``(1 - diversity) * relevance - diversity * (similarity to the nearest pick so far)``."""
    chosen: list[int] = []
    nearest_pick = np.full(len(relevance), -np.inf, np.float32)
    available = np.ones(len(relevance), bool)
    for _ in range(min(k, len(relevance))):
        redundancy = np.where(np.isfinite(nearest_pick), nearest_pick, 0.0)
        gain = (1 - diversity) * relevance - diversity * redundancy
        gain[~available] = -np.inf
        pick = int(np.argmax(gain))
        chosen.append(pick)
        available[pick] = False
        nearest_pick = np.maximum(nearest_pick, matrix @ matrix[pick])
    return chosen


def _same_size(found: dict[str, list[float]]) -> dict[str, FloatArray]:
    """The liked signatures of the most common size (photos tagged by another backbone have
    signatures of another size, which cannot be averaged with the rest)."""
    sizes = [len(vector) for vector in found.values()]
    common = max(set(sizes), key=sizes.count)
    return {ref: np.asarray(v, np.float32) for ref, v in found.items() if len(v) == common}


def _unit(vector: npt.ArrayLike) -> FloatArray:
    array = np.asarray(vector, np.float32)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array
