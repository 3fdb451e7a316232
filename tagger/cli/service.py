"""Commands for the fleet: run a worker, submit photos, follow jobs, list failures."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tagger import metrics
from tagger.cli.output import print_json_lines, results_table
from tagger.client import InvalidReference, TaggerClient
from tagger.config import Settings


def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int | None, typer.Option("-c", "--concurrency", help="processes (default: cores)")
    ] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "INFO",
) -> None:
    """Start a Celery worker for the tagging queue; extra flags go to ``celery worker``."""
    settings = Settings()
    queues = [settings.worker.queue]
    if settings.backfill.queue and settings.backfill.queue not in queues:
        queues.append(settings.backfill.queue)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "worker",
        f"--loglevel={loglevel}",
        "-Q",
        ",".join(queues),
        "-c",
        str(concurrency or settings.worker.concurrency or os.cpu_count() or 1),
        *ctx.args,
    ]
    if not any(arg in ("-n", "--hostname") or arg.startswith("--hostname=") for arg in ctx.args):
        # Two workers on one host with the same node name confuse remote control and Flower;
        # the PID makes each unique unless the operator names them.
        argv += ["-n", f"tagger-{os.getpid()}@%h"]
    if settings.metrics.port:
        # prometheus_client decides at its first import whether processes share metric files,
        # from this variable alone; set here, before Celery (the same PID after exec) imports
        # anything, it reaches the main process and every child it forks.
        try:
            os.environ.update(metrics.multiprocess_env(settings.metrics, os.getpid()))
        except OSError as exc:  # metrics must never keep the worker from starting
            Console(stderr=True).print(f"metrics off: {exc}", markup=False, highlight=False)
    os.execv(sys.executable, argv)


def submit(
    refs: Annotated[list[str] | None, typer.Argument(help="s3://…, https://… or paths")] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="one reference per line; - for stdin")
    ] = None,
    force: Annotated[bool, typer.Option(help="re-tag even if already tagged")] = False,
    wait: Annotated[bool, typer.Option(help="wait for the job with a progress bar")] = False,
) -> None:
    """Enqueue photos for the workers and print the job id."""
    wanted = list(refs or [])
    if from_file is not None:
        text = sys.stdin.read() if str(from_file) == "-" else from_file.read_text("utf-8")
        wanted += [line.strip() for line in text.splitlines() if line.strip()]
    if not wanted:
        raise typer.BadParameter("give references or --from-file")
    with TaggerClient(Settings()) as client:
        try:
            job = client.submit(wanted, force=force)
        except InvalidReference as exc:
            Console(stderr=True).print(f"[red]{exc}[/red]; nothing was submitted")
            raise typer.Exit(2) from None
        typer.echo(job.id)
        if wait:
            counts = job.wait(progress=True)
            Console(stderr=True).print(counts.model_dump())


def status(job_id: Annotated[str, typer.Argument()]) -> None:
    """Counts of a job: queued, done, failed, skipped."""
    with TaggerClient(Settings()) as client:
        counts = client.job(job_id).status()
    if counts.total == 0:
        Console(stderr=True).print(f"no job {job_id}")
        raise typer.Exit(1)
    typer.echo(counts.model_dump_json())


def failures(
    limit: Annotated[int, typer.Option(min=1)] = 100,
    json_lines: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Photos that could not be tagged, with their reasons, most recent first."""
    with TaggerClient(Settings()) as client:
        failed = client.failures(limit=limit)
    if json_lines:
        print_json_lines(failed)
    else:
        Console().print(results_table(failed))


def register(app: typer.Typer) -> None:
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(worker)
    app.command()(submit)
    app.command()(status)
    app.command()(failures)
