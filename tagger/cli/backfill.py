"""``tagger backfill`` (catch a bucket prefix up, by hand) and ``tagger beat`` (every night)."""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tagger.backfill import (
    BackfillError,
    BackfillOptions,
    BackfillSummary,
    Lease,
    LockHeld,
    Target,
    current_versions,
    hold_lock,
    run_backfill,
)
from tagger.client import TaggerClient
from tagger.config import Settings
from tagger.errors import ConfigError, ModelError
from tagger.schemas import combined_version

EXIT_LOCKED = 3
"""Exit status when another backfill of the same prefix is running; distinct from failures,
so a cron wrapper can tell "already being done" from "broken"."""


def _progress(console: Console) -> Progress:
    """Counts as they grow; the bar pulses because a listing's length is unknown up front."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("listed {task.fields[listed]}"),
        TextColumn("skipped {task.fields[skipped]}"),
        TextColumn("submitted {task.fields[submitted]}"),
        TextColumn("failed {task.fields[failed]}"),
        TextColumn("{task.fields[rate]:.0f} photos/s"),
        TimeElapsedColumn(),
        console=console,
    )


def _fields(summary: BackfillSummary) -> dict[str, Any]:
    return {
        "listed": summary.listed,
        "skipped": summary.skipped,
        "submitted": summary.submitted,
        "failed": summary.failed,
        "rate": summary.rate,
    }


def _print_summary(summary: BackfillSummary) -> None:
    verb = "would submit" if summary.dry_run else "submitted"
    state = "complete" if summary.completed else "stopped early; the next run continues"
    typer.echo(f"{summary.target}: {summary.listed} photos listed, {verb} {summary.submitted}")
    typer.echo(
        f"  new {summary.new}, changed {summary.changed}, already tagged {summary.current}, "
        f"older model {summary.outdated}, failed before {summary.failed}, "
        f"retried after a transient failure {summary.transient}"
    )
    typer.echo(f"  skipped {summary.skipped}; other objects {summary.other_objects}")
    if summary.resumed_after is not None:
        typer.echo(f"  resumed after {summary.resumed_after}")
    typer.echo(
        f"  {state}: {summary.seconds:.1f} s, {summary.rate:.0f} photos/s, "
        f"{summary.waited_seconds:.1f} s waiting for the queue (max depth "
        f"{summary.max_queue_depth_seen}), analysers {summary.model_version}"
    )


def backfill(
    target: Annotated[str, typer.Argument(help="s3://bucket/prefix to scan")],
    retag_outdated: Annotated[
        bool,
        typer.Option(
            help="also re-tag photos whose analysers are outdated; only those analysers re-run"
        ),
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option(help="also retry photos whose earlier failure was permanent")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="list and check only; submit nothing, move no cursor")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(min=1, help="submit at most N photos; the next run continues")
    ] = None,
    restart: Annotated[
        bool, typer.Option(help="list from the start, ignoring where the last run stopped")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    analyzer_versions: Annotated[
        str | None,
        typer.Option(
            "--versions",
            help="compare with these analyser versions (classify=…,objects=…) "
            "instead of the installed ones",
        ),
    ] = None,
) -> None:
    """Submit every photo under an S3 prefix that is not tagged yet, paced by the queue."""
    settings = Settings()
    try:
        parsed = Target.parse(target)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="TARGET") from None
    err = Console(stderr=True)
    try:
        versions = (
            parse_versions(analyzer_versions) if analyzer_versions else current_versions(settings)
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--versions") from None
    except (ModelError, ConfigError) as exc:
        err.print(f"[red]{exc.reason}[/red] (or pass --versions)")
        raise typer.Exit(1) from None
    version = combined_version(versions)
    options = BackfillOptions(
        retag_outdated=retag_outdated,
        retry_failed=retry_failed,
        dry_run=dry_run,
        limit=limit,
        restart=restart,
    )
    lock: AbstractContextManager[Lease | None] = (
        nullcontext() if dry_run else hold_lock(settings, parsed)
    )
    try:
        with TaggerClient(settings) as client, lock as lease, _progress(err) as bar:
            task = bar.add_task(
                parsed.uri,
                total=None,
                **_fields(BackfillSummary(target=parsed.uri, model_version=version)),
            )

            def show(summary: BackfillSummary, phase: str) -> None:
                label = "waiting for the queue" if phase == "waiting" else parsed.uri
                bar.update(task, description=label, **_fields(summary))

            summary = run_backfill(
                settings,
                parsed,
                client.store,
                None if dry_run else client,
                options,
                versions=versions,
                lease=lease,
                on_progress=show,
            )
    except LockHeld as exc:
        err.print(f"[yellow]{exc}[/yellow]")
        raise typer.Exit(EXIT_LOCKED) from None
    except BackfillError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    if json_output:
        typer.echo(summary.model_dump_json())
    else:
        _print_summary(summary)


def beat(ctx: typer.Context) -> None:
    """Run Celery beat, which starts the nightly backfill of TAGGER_BACKFILL__TARGETS.

    Extra arguments go to ``celery beat``. The process is replaced by celery's, so a container
    runtime's stop signal reaches beat directly.
    """
    settings = Settings()
    if not settings.backfill.targets:
        Console(stderr=True).print(
            "[yellow]no backfill targets configured (TAGGER_BACKFILL__TARGETS); "
            "beat will schedule nothing[/yellow]"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "beat",
        "--loglevel=INFO",
        f"--schedule={settings.data_dir / 'celerybeat-schedule'}",
        *ctx.args,
    ]
    os.execv(sys.executable, argv)


def register(app: typer.Typer) -> None:
    app.command("backfill")(backfill)
    app.command(
        "beat", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )(beat)


def parse_versions(text: str) -> dict[str, str]:
    """``classify=c786…,objects=1f2e…`` as a mapping."""
    versions: dict[str, str] = {}
    for part in text.split(","):
        name, sep, version = part.strip().partition("=")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"expected NAME=VERSION, got {part.strip()!r}")
        versions[name.strip()] = version.strip()
    return versions
