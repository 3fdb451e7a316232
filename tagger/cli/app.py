"""Assembles the command groups into the one ``tagger`` typer app."""

from __future__ import annotations

import typer

from tagger.cli import backfill, bench, find, labels, listen, local, model, serve, service

app = typer.Typer(
    help="Tag photos by what they show, not by their hashtags.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
local.register(app)
find.register(app)
service.register(app)
bench.register(app)
listen.register(app)
backfill.register(app)
labels.register(app)
serve.register(app)
app.add_typer(model.app, name="model", help="Build and inspect the ONNX model artifact.")
