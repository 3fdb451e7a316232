"""How results look in a terminal: one table for people, JSON Lines for programs."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from types import MappingProxyType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tagger.schemas import Status, TagResult

_STATUS_STYLE = MappingProxyType(
    {Status.TAGGED: "green", Status.FAILED: "red", Status.SKIPPED: "yellow"}
)


def results_table(results: Iterable[TagResult]) -> Table:
    table = Table(show_lines=False, expand=False)
    table.add_column("photo", overflow="fold")
    table.add_column("status")
    table.add_column("tags", overflow="fold")
    table.add_column("objects", overflow="fold")
    table.add_column("colours", overflow="fold")
    table.add_column("nsfw", justify="right")
    table.add_column("top class", overflow="fold")
    for result in results:
        style = _STATUS_STYLE[result.status]
        objects = colours = nsfw = ""
        if result.status == Status.FAILED:
            kind = f"{result.error}, transient" if result.transient else str(result.error)
            tags = f"[red]{result.reason}[/red] ({kind})"
            top = ""
        else:
            objects = ", ".join(f"{label} x{n}" for label, n in (result.counts or {}).items())
            if result.colours is not None:
                colours = ", ".join(
                    f"{share.name} {share.fraction:.0%}" for share in result.colours.subject[:3]
                )
            nsfw = "" if result.nsfw is None else f"{result.nsfw:.3f}"
            tags = ", ".join(
                f"{tag.name} {tag.score:.2f}"
                + (f" ({', '.join(tag.parents)})" if tag.parents else "")
                for tag in result.tags
            )
            top = (
                f"{result.classes[0].label} {result.classes[0].score:.2f}" if result.classes else ""
            )
        status = f"[{style}]{result.status.value}[/{style}]"
        table.add_row(result.ref, status, tags, objects, colours, nsfw, top)
    return table


def print_json_lines(results: Iterable[TagResult]) -> None:
    """Plain stdout, not rich: JSON Lines must not be wrapped or coloured."""
    for result in results:
        sys.stdout.write(result.model_dump_json() + "\n")
    sys.stdout.flush()


def progress(console: Console) -> Progress:
    """A bar with a live images/s figure; it draws on stderr so stdout stays pipeable."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} images/s"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
