"""``tagger bench``: throughput figures of every layer, in one run on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tagger.bench import run_backfill_bench, run_bench
from tagger.config import Settings
from tagger.devservers import DevServerError


def bench(
    photos: Annotated[
        Path,
        typer.Argument(help="a folder of photos, e.g. ../shared/data/imagenet-dev", exists=True),
    ],
    copies: Annotated[int, typer.Option(min=1, help="each photo under this many names")] = 2,
    naive_photos: Annotated[
        int | None, typer.Option(help="photos for the naive peer (default: all; 0 skips it)")
    ] = None,
    repeat: Annotated[int, typer.Option(min=1, help="runs per figure; the median is shown")] = 3,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Model limit, compute limit, service (local, S3), naive Keras peer, ratios, CPU ms."""
    err = Console(stderr=True)
    try:
        report = run_bench(
            Settings(),
            photos,
            copies=copies,
            naive_photos=naive_photos,
            repeat=repeat,
            say=err.print,
        )
    except DevServerError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if json_output:
        typer.echo(report.model_dump_json(indent=2))


def bench_backfill(
    objects: Annotated[int, typer.Option(min=1, help="tiny photos put in the S3 bucket")] = 5000,
    already_tagged: Annotated[float, typer.Option(min=0, max=1)] = 0.3,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Listing + check + submit rate of the backfill against a local moto S3 server."""
    err = Console(stderr=True)
    try:
        report = run_backfill_bench(
            Settings(), objects=objects, already_tagged=already_tagged, say=err.print
        )
    except DevServerError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if json_output:
        typer.echo(report.model_dump_json(indent=2))


def register(app: typer.Typer) -> None:
    app.command()(bench)
    app.command("bench-backfill")(bench_backfill)
