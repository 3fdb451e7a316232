"""``tagger search``, ``tagger similar`` and ``tagger recommend``: reading the store by text,
by example and by what someone liked; every hit says why it matched."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console

from tagger.config import Settings
from tagger.schemas import PhotoRef
from tagger.search import NothingToSearch, Searcher
from tagger.store import SearchFilters, SearchHit, SqlTagStore

JsonOption = Annotated[bool, typer.Option("--json", help="one JSON hit per line")]
SafeOption = Annotated[
    bool, typer.Option(help="leave out photos the safety analyser flagged or did not score")
]
TagOption = Annotated[
    list[str] | None, typer.Option("--tag", "-t", help="hits must have this tag (repeatable)")
]
ColourOption = Annotated[
    list[str] | None,
    typer.Option("--colour", "-c", help="hits' subject must be this colour (repeatable)"),
]
MinPeople = Annotated[int | None, typer.Option(min=0, help="at least this many people")]
MaxPeople = Annotated[int | None, typer.Option(min=0, help="at most this many people")]


def register(app: typer.Typer) -> None:
    app.command()(search)
    app.command()(similar)
    app.command()(recommend)


@contextmanager
def _searcher() -> Iterator[tuple[Settings, Searcher]]:
    settings = Settings()
    store = SqlTagStore.from_settings(settings)
    try:
        yield settings, Searcher(store)
    finally:
        store.close()


def _filters(
    settings: Settings,
    tags: Sequence[str] | None,
    colours: Sequence[str] | None,
    min_people: int | None,
    max_people: int | None,
    safe: bool,
) -> SearchFilters:
    return SearchFilters(
        tags=tuple(tags or ()),
        colours=tuple(colours or ()),
        min_people=min_people,
        max_people=max_people,
        max_nsfw=settings.safety.safe_below if safe else None,
    )


def _why(hit: SearchHit) -> str:
    parts = []
    for match in hit.why:
        if match.kind == "similarity":
            continue
        label = f"{match.name} (colour)" if match.kind == "colour" else match.name
        shown = f"{int(match.score)}" if match.kind == "people" else f"{match.score:.2f}"
        parts.append(f"{label} {shown}")
    return ", ".join(parts)


def _print(hits: Sequence[SearchHit], json_lines: bool) -> None:
    for hit in hits:
        if json_lines:
            typer.echo(hit.model_dump_json())
            continue
        why = _why(hit)
        shown = ", ".join(hit.tags[:6])
        typer.echo(f"{hit.score:.3f}\t{hit.ref}\t{shown}" + (f"\t[{why}]" if why else ""))


def search(
    words: Annotated[
        list[str],
        typer.Argument(help='tags or a text query: cat animal, "a blue car by the beach"'),
    ],
    limit: Annotated[int, typer.Option(min=1)] = 50,
    tag: TagOption = None,
    colour: ColourOption = None,
    min_people: MinPeople = None,
    max_people: MaxPeople = None,
    safe: SafeOption = False,
    json_lines: JsonOption = False,
) -> None:
    """Photos matching a text query or tags, best first: the words become tags through the
    vocabulary (synonyms, plurals), a colour word binds to the noun after it, and words that
    match no tag are reported."""
    err = Console(stderr=True)
    query = " ".join(words)
    with _searcher() as (settings, searcher):
        filters = _filters(settings, tag, colour, min_people, max_people, safe)
        try:
            found = searcher.text(query, limit=limit, filters=filters)
        except NothingToSearch as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    for word in found.unknown:
        err.print(f"[yellow]no tag for {word!r}[/yellow] (left out of the search)")
    meaning = [*found.tags, *(f"{c} (colour)" for c in found.colours)]
    if found.people is not None:
        meaning.append(f"{found.people} people")
    if not json_lines:
        err.print(f"searching for: {', '.join(meaning) or 'the filters'}")
    _print(found.hits, json_lines)
    if not found.hits:
        err.print("no photo matches")


def similar(
    ref: Annotated[str, typer.Argument(help="a tagged photo: its path or reference")],
    k: Annotated[int, typer.Option("--k", min=1, help="how many photos")] = 20,
    tag: TagOption = None,
    colour: ColourOption = None,
    min_people: MinPeople = None,
    max_people: MaxPeople = None,
    safe: SafeOption = False,
    json_lines: JsonOption = False,
) -> None:
    """Photos most like a tagged photo, best first."""
    with _searcher() as (settings, searcher):
        filters = _filters(settings, tag, colour, min_people, max_people, safe)
        try:
            hits = searcher.similar(PhotoRef.parse(ref).identity, k=k, filters=filters)
        except ValueError as exc:
            Console(stderr=True).print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    _print(hits, json_lines)


def recommend(
    liked: Annotated[list[str], typer.Argument(help="photos someone liked (paths or refs)")],
    k: Annotated[int, typer.Option("--k", min=1, help="how many photos")] = 20,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", "-x", help="already seen (repeatable)")
    ] = None,
    diversity: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="0: most similar; higher: more varied")
    ] = 0.3,
    tag: TagOption = None,
    colour: ColourOption = None,
    safe: SafeOption = False,
    json_lines: JsonOption = False,
) -> None:
    """Photos for someone who liked the given ones: near the whole profile, diversified."""
    err = Console(stderr=True)
    with _searcher() as (settings, searcher):
        filters = _filters(settings, tag, colour, None, None, safe)
        try:
            found = searcher.recommend(
                [PhotoRef.parse(ref).identity for ref in liked],
                k=k,
                exclude=[PhotoRef.parse(ref).identity for ref in exclude or ()],
                diversity=diversity,
                filters=filters,
            )
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    for ref in found.missing:
        err.print(f"[yellow]not tagged yet, left out of the profile:[/yellow] {ref}")
    _print(found.hits, json_lines)
