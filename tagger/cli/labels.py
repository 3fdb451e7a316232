"""``tagger train`` and ``tagger labels …``: custom labels from a few labelled folders.

Training needs TensorFlow (the ``build`` extra); applying a label set does not. Every mistake
a user can make with their photos (one label, too few photos, unreadable files, the same photo
under two labels) is a message here, never a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tagger.analyzers.labels import active_specs
from tagger.config import Settings
from tagger.errors import ConfigError, TaggerError
from tagger.model.labelset import (
    LabelSet,
    LabelSetSpec,
    Metrics,
    all_labelsets,
    find_local,
    read_active,
    write_active,
)
from tagger.model.labelset_remote import RemoteLabelSets
from tagger.sources import make_s3_client
from tagger.training.dataset import DatasetError
from tagger.training.train import TrainOptions, TrainReport, evaluate_labelset, train_labelset

app = typer.Typer(no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]


def register(root: typer.Typer) -> None:
    root.command()(train)
    root.add_typer(app, name="labels", help="Custom label sets: list, inspect, evaluate, activate.")


def _fail(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


@contextmanager
def _user_errors() -> Iterator[None]:
    """What the user can fix (their photos, a name, a missing setting or label set) as one
    line and exit 1; the same wording `tagger` prints for any typed failure."""
    try:
        yield
    except DatasetError as exc:
        _fail(str(exc))
    except TaggerError as exc:
        _fail(exc.reason)


def _require_tensorflow() -> None:
    """Training imports TensorFlow lazily; say how to get it before any photo is read."""
    if importlib.util.find_spec("tensorflow") is None:  # pragma: no cover - depends on install
        _fail("training needs the 'build' extra (TensorFlow): pip install 'tagger[build]'")


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def train(
    source: Annotated[
        str, typer.Argument(help="a folder with one sub-folder per label, or a CSV of ref,label")
    ],
    name: Annotated[
        str, typer.Option("--name", "-n", help="the label set's name; its tags' parent")
    ],
    multi: Annotated[
        bool, typer.Option(help="labels are not exclusive (sigmoid, multi-label)")
    ] = False,
    fine_tune: Annotated[
        bool, typer.Option(help="also train the backbone's top blocks (needs more photos, slower)")
    ] = False,
    activate: Annotated[bool, typer.Option(help="apply it to photos tagged from now on")] = False,
    as_json: JsonOption = False,
) -> None:
    """Teach tagger new tags from labelled photos (TensorFlow; the 'build' extra)."""
    _require_tensorflow()
    settings = Settings()
    err = Console(stderr=True)
    with _user_errors(), _bar(err) as bar:
        task = bar.add_task("embedding photos", total=None)
        report: TrainReport = train_labelset(
            settings,
            source,
            TrainOptions(name=name, multi=multi, fine_tune=fine_tune),
            progress=lambda done: bar.advance(task, done),
        )
    if activate:
        _set_active(settings, LabelSetSpec.parse(report.labelset), on=True)
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
        return
    out = Console()
    for ref, reason in report.failures:
        err.print(f"[yellow]skipped[/yellow] {ref}: {reason}")
    for duplicate in report.duplicates:
        what = "dropped (labels disagree)" if duplicate.dropped else "counted once"
        err.print(
            f"[yellow]duplicate photo[/yellow] {', '.join(duplicate.refs)} "
            f"({', '.join(duplicate.labels)}): {what}"
        )
    for ignored in report.ignored:
        err.print(f"[yellow]ignored[/yellow] {ignored}")
    out.print(
        f"trained [bold]{report.labelset}[/bold] on {report.photos} photos "
        f"({report.validation_photos} held out for validation) in {report.seconds:.1f} s: "
        f"{report.epochs} epochs, {report.computed} embeddings computed, {report.cached} cached"
    )
    out.print(_metrics_table(report.metrics, "validation"))
    out.print(f"saved in {report.path}")
    if not activate:
        out.print(f"apply it with: tagger labels activate {name}")


def _metrics_table(metrics: Metrics, title: str) -> Table:
    headline = (
        f"accuracy {metrics.accuracy:.3f}"
        if metrics.accuracy is not None
        else f"micro-F1 {metrics.micro_f1:.3f}"
    )
    table = Table(title=f"{title}: {metrics.photos} photos, {headline}")
    for column in ("label", "precision", "recall", "photos", "threshold"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label, found in metrics.labels.items():
        mark = "" if found.precision_target_met else " [yellow](below target)[/yellow]"
        table.add_row(
            label,
            f"{found.precision:.3f}",
            f"{found.recall:.3f}",
            str(found.support),
            f"{found.threshold:.3f}{mark}",
        )
    return table


def _confusion_table(metrics: Metrics, labels: list[str]) -> Table:
    table = Table(title="confusion (rows: true, columns: predicted)")
    table.add_column("")
    for label in labels:
        table.add_column(label[:10], justify="right")
    for label, row in zip(labels, metrics.confusion or [], strict=False):
        table.add_row(label, *(str(n) for n in row))
    return table


def _found(settings: Settings, text: str) -> LabelSet:
    with _user_errors():
        spec = LabelSetSpec.parse(text)
        labelset = find_local(settings.labelsets_root, spec)
    if labelset is None:
        _fail(f"no label set {spec} in {settings.labelsets_root}; see `tagger labels list`")
    assert labelset is not None
    return labelset


@app.command("list")
def list_sets(as_json: JsonOption = False) -> None:
    """Every local label set version, and which are active."""
    settings = Settings()
    root = settings.labelsets_root
    # the versions the analyser would apply: a bare name is its newest, a prefix its match
    with _user_errors():
        active = {s.spec for spec in active_specs(settings) if (s := find_local(root, spec))}
    found = all_labelsets(root)
    if as_json:
        rows = [{"labelset": s.spec, "active": s.spec in active, **_summary(s)} for s in found]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table()
    for column in ("label set", "active", "kind", "labels", "photos", "score", "created"):
        table.add_column(column)
    for labelset in found:
        summary = _summary(labelset)
        table.add_row(
            labelset.spec,
            "yes" if labelset.spec in active else "",
            str(summary["kind"]),
            str(summary["labels"]),
            str(summary["photos"]),
            str(summary["score"]),
            str(summary["created"]),
        )
    Console().print(table)


def _summary(labelset: LabelSet) -> dict[str, object]:
    manifest = labelset.manifest
    metrics = manifest.metrics
    return {
        "kind": manifest.kind + (" multi" if manifest.multi else ""),
        "labels": ", ".join(manifest.labels),
        "photos": manifest.data.photos,
        "score": f"acc {metrics.accuracy:.3f}"
        if metrics.accuracy is not None
        else f"F1 {metrics.micro_f1:.3f}",
        "created": manifest.created_at.strftime("%Y-%m-%d %H:%M"),
    }


@app.command()
def show(labelset: Annotated[str, typer.Argument(help="name or name@version")]) -> None:
    """The manifest of one label set: labels, thresholds, validation metrics, training data."""
    found = _found(Settings(), labelset)
    sys.stdout.write(found.manifest.model_dump_json(indent=2) + "\n")


@app.command("eval")
def eval_set(
    labelset: Annotated[str, typer.Argument(help="name or name@version")],
    source: Annotated[str, typer.Argument(help="held-out photos: folder per label, or CSV")],
    as_json: JsonOption = False,
) -> None:
    """Accuracy, per-label precision/recall and the confusion matrix on held-out photos; the
    matrix is also written as a PNG beside the label set."""
    _require_tensorflow()
    settings = Settings()
    found = _found(settings, labelset)
    err = Console(stderr=True)
    with _user_errors(), _bar(err) as bar:
        task = bar.add_task("embedding photos", total=None)
        report = evaluate_labelset(
            settings, found, source, progress=lambda done: bar.advance(task, done)
        )
    if as_json:
        payload = {
            "labelset": report.labelset,
            "accuracy": report.metrics.accuracy,
            "micro_f1": report.metrics.micro_f1,
            "photos": report.photos,
            "failures": report.failures,
            "labels": {k: v.model_dump() for k, v in report.metrics.labels.items()},
            "confusion": report.metrics.confusion,
            "confusion_png": str(report.confusion_png) if report.confusion_png else None,
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    for ref, reason in report.failures:
        err.print(f"[yellow]skipped[/yellow] {ref}: {reason}")
    out = Console()
    out.print(_metrics_table(report.metrics, report.labelset))
    if report.metrics.confusion is not None:
        out.print(_confusion_table(report.metrics, found.manifest.labels))
    if report.confusion_png is not None:
        out.print(f"confusion matrix: {report.confusion_png}")


def _set_active(settings: Settings, spec: LabelSetSpec, *, on: bool) -> None:
    pinned = {s.name: s for s in read_active(settings.labelsets_root)}
    if on:
        pinned[spec.name] = spec
    else:
        pinned.pop(spec.name, None)
    write_active(settings.labelsets_root, list(pinned.values()))


@app.command()
def activate(labelset: Annotated[str, typer.Argument(help="name or name@version")]) -> None:
    """Apply a label set (its newest version unless one is named) to photos tagged from now
    on; `tagger backfill --retag-outdated` or `tagger tag` again applies it to stored photos
    from their embeddings."""
    settings = Settings()
    found = _found(settings, labelset)
    _set_active(settings, LabelSetSpec(name=found.name, version=found.version), on=True)
    typer.echo(f"active: {found.spec}")
    if settings.labelsets is not None:
        typer.echo("note: TAGGER_LABELSETS is set and takes precedence over activation")


@app.command()
def deactivate(name: Annotated[str, typer.Argument(help="the label set's name")]) -> None:
    """Stop applying a label set (tags it already gave stay until photos are re-tagged)."""
    settings = Settings()
    with _user_errors():
        spec = LabelSetSpec.parse(name)
    if spec.name not in {s.name for s in read_active(settings.labelsets_root)}:
        _fail(f"{spec.name} is not active")
    _set_active(settings, spec, on=False)
    typer.echo(f"deactivated: {spec.name}")


def _remote(settings: Settings, uri: str | None) -> RemoteLabelSets:
    target = uri or settings.labelsets_uri
    if not target:
        raise ConfigError("set TAGGER_LABELSETS_URI=s3://bucket/prefix or pass --to/--from")
    return RemoteLabelSets(make_s3_client(settings), target)


@app.command()
def push(
    labelset: Annotated[str, typer.Argument(help="name or name@version")],
    to: Annotated[
        str | None, typer.Option(help="s3://bucket/prefix (default TAGGER_LABELSETS_URI)")
    ] = None,
) -> None:
    """Upload a label set version so workers can pull it (TAGGER_LABELSETS=name@version)."""
    settings = Settings()
    found = _found(settings, labelset)
    with _user_errors():
        where = _remote(settings, to).push(found)
    typer.echo(f"pushed {found.spec} to {where}")
    typer.echo(f"workers apply it with TAGGER_LABELSETS={found.spec}")


@app.command()
def pull(
    labelset: Annotated[str, typer.Argument(help="name@version")],
    source: Annotated[str | None, typer.Option("--from", help="s3://bucket/prefix")] = None,
) -> None:
    """Download a label set version into the model folder and verify it."""
    settings = Settings()
    with _user_errors():
        spec = LabelSetSpec.parse(labelset)
        found = _remote(settings, source).pull(spec, settings.labelsets_root)
    typer.echo(f"pulled {found.spec} into {found.path}")
