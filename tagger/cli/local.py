"""Commands that run in-process on the embedded defaults: no broker, no server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tagger.cli.output import print_json_lines, progress, results_table
from tagger.config import Settings
from tagger.evaluation import evaluate, evaluate_similar, labelled_photos
from tagger.localfiles import find_photos
from tagger.pipeline import Pipeline, tag_and_store
from tagger.schemas import Status, TagResult
from tagger.store import SqlTagStore
from tagger.thumbnails import thumbnail_store

Arch = Annotated[
    str | None, typer.Option("--arch", help="lite0 or lite2 (default from TAGGER_MODEL__ARCH)")
]


def settings_for(arch: str | None) -> Settings:
    settings = Settings()
    if arch is not None:
        if arch not in ("lite0", "lite2"):
            raise typer.BadParameter(f"unknown architecture {arch!r}; use lite0 or lite2")
        settings.model.arch = arch  # type: ignore[assignment]
    return settings


def tag(
    paths: Annotated[list[Path], typer.Argument(help="photo files and folders (recursive)")],
    json_lines: Annotated[bool, typer.Option("--json", help="one JSON object per photo")] = False,
    force: Annotated[bool, typer.Option(help="re-tag photos already tagged")] = False,
    arch: Arch = None,
) -> None:
    """Tag photos on this machine and save the results in the local store."""
    settings = settings_for(arch)
    err = Console(stderr=True)
    files = [str(path) for path in find_photos(paths)]
    missing = [path for path in paths if not path.exists() and not path.is_symlink()]
    for path in missing:
        err.print(f"[yellow]not found:[/yellow] {path}")
    if not files:
        err.print("no photos found")
        raise typer.Exit(1 if missing else 0)
    store = SqlTagStore.from_settings(settings)
    thumbnails = thumbnail_store(settings)
    shown: list[TagResult] = []
    with Pipeline.from_settings(settings, allow_local_paths=True) as pipeline:
        started = time.perf_counter()
        with progress(err) as bar:
            task = bar.add_task("tagging", total=len(files), rate=0.0)
            for stored_batch in tag_and_store(
                pipeline, store, files, force=force, thumbnails=thumbnails, show_stored=True
            ):
                batch = stored_batch.results
                shown.extend(batch)
                done = len(shown)
                bar.update(task, advance=len(batch), rate=done / (time.perf_counter() - started))
                if json_lines:
                    print_json_lines(batch)
    store.close()
    if not json_lines:
        Console().print(results_table(shown))
    failed = sum(r.status == Status.FAILED for r in shown)
    err.print(f"{len(shown) - failed} tagged, {failed} failed; store: {settings.store_url}")


def show(
    refs: Annotated[list[str], typer.Argument(help="photo references as tagged")],
    json_lines: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the stored tags of photos."""
    from tagger.schemas import PhotoRef

    store = SqlTagStore.from_settings(Settings())
    wanted = [PhotoRef.parse(ref).identity for ref in refs]
    found = store.get_many(wanted)
    store.close()
    results = [found[ref] for ref in wanted if ref in found]
    for ref in wanted:
        if ref not in found:
            Console(stderr=True).print(f"[yellow]not tagged yet:[/yellow] {ref}")
    if json_lines:
        print_json_lines(results)
    elif results:
        Console().print(results_table(results))
    if len(results) < len(wanted):
        raise typer.Exit(1)


def flagged(
    limit: Annotated[int, typer.Option(min=1)] = 100,
    threshold: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="default: TAGGER_SAFETY__THRESHOLD"),
    ] = None,
    json_lines: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Photos the safety analyser flagged as not safe for work, most likely first."""
    settings = Settings()
    chosen = settings.safety.threshold if threshold is None else threshold
    store = SqlTagStore.from_settings(settings)
    results = store.flagged(chosen, limit=limit)
    store.close()
    if json_lines:
        print_json_lines(results)
        return
    for result in results:
        typer.echo(f"{result.nsfw:.3f}\t{result.ref}")
    if not results:
        Console(stderr=True).print(f"no photo has an nsfw score of {chosen} or more")


def eval_command(
    folder: Annotated[Path, typer.Argument(help="photos named <wnid>_*.JPEG", exists=True)],
    arch: Arch = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Top-1 / top-5 accuracy and images/s of the shipped flow on labelled photos."""
    settings = settings_for(arch)
    photos = labelled_photos(folder)
    if not photos:
        raise typer.BadParameter(f"no photos named <wnid>_*.JPEG in {folder}")
    err = Console(stderr=True)
    with Pipeline.from_settings(settings, allow_local_paths=True) as pipeline:
        pipeline.tag_batch([str(photos[0][0])])  # warm-up: first-run costs are not throughput
        with progress(err) as bar:
            task = bar.add_task("evaluating", total=len(photos), rate=0.0)
            started = time.perf_counter()

            def advance(count: int) -> None:
                done = bar.tasks[0].completed + count
                bar.update(task, advance=count, rate=done / (time.perf_counter() - started))

            report = evaluate(pipeline, photos, advance)
    if json_output:
        typer.echo(report.model_dump_json())
        return
    analysers = ", ".join(report.analyzers)
    typer.echo(f"model        {report.model} ({report.model_version})")
    typer.echo(f"photos       {report.photos} ({report.failed} failed)")
    typer.echo(f"top-1        {report.top1:.4f}")
    typer.echo(f"top-5        {report.top5:.4f}")
    typer.echo(f"images/s     {report.images_per_second:.1f} (analysers: {analysers})")
    if report.safety is not None:
        safety = report.safety
        typer.echo(
            f"safety       median nsfw {safety.median_nsfw:.4f}, max {safety.max_nsfw:.3f}, "
            f"{len(safety.flagged)} flagged ({safety.flagged_fraction:.1%}) at "
            f"{safety.threshold}" + (f": {', '.join(safety.flagged)}" if safety.flagged else "")
        )
    if report.people is not None:
        people = report.people
        typer.echo(
            f"person       precision {people.precision:.3f}, recall {people.recall:.3f} on "
            f"{people.labelled} labelled photos ({people.with_person} with a person)"
        )
        if people.false_positives or people.missed:
            typer.echo(f"             false: {', '.join(people.false_positives) or '-'}")
            typer.echo(f"             missed: {', '.join(people.missed) or '-'}")


def eval_similar(
    folder: Annotated[Path, typer.Argument(help="photos named <wnid>_*.JPEG", exists=True)],
    k: Annotated[int, typer.Option(min=1)] = 10,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """precision@k of "more like this" by tag and by group, for each signal and the blend."""
    settings = Settings(analyzers=["classify"])
    photos = labelled_photos(folder)
    if not photos:
        raise typer.BadParameter(f"no photos named <wnid>_*.JPEG in {folder}")
    with Pipeline.from_settings(settings, allow_local_paths=True) as pipeline:
        report = evaluate_similar(pipeline, photos, k)
    if json_output:
        typer.echo(report.model_dump_json())
        return
    typer.echo(
        f"{report.photos} photos; precision@{report.k} by tag ({report.queries_by_tag} "
        f"queries) / by group ({report.queries_by_group} queries)"
    )
    for name, (by_tag, by_group) in report.precision.items():
        typer.echo(f"{name:22s} {by_tag:.3f} / {by_group:.3f}")
    best_tag, best_group = report.best_possible
    typer.echo(f"{'best possible here':22s} {best_tag:.3f} / {best_group:.3f}")


def register(app: typer.Typer) -> None:
    app.command()(tag)
    app.command()(show)
    app.command()(flagged)
    app.command("eval")(eval_command)
    app.command("eval-similar")(eval_similar)
