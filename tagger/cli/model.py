"""``tagger model …``: build the artifact ahead of time and look at what is installed."""

from __future__ import annotations

from typing import Annotated

import typer

from tagger.cli.local import Arch, settings_for
from tagger.model.registry import artifact_dir, build_artifact, load_artifact, manifest_json

app = typer.Typer(no_args_is_help=True)


@app.command()
def build(arch: Arch = None) -> None:
    """Build the ONNX model from the packaged ImageNet weights (needs the 'build' extra)."""
    settings = settings_for(arch)
    path = artifact_dir(settings)
    artifact = build_artifact(settings.model.arch, path)
    typer.echo(f"built {artifact.manifest.name} version {artifact.version} in {path}")


@app.command()
def info(arch: Arch = None) -> None:
    """Print the verified manifest of the installed model."""
    settings = settings_for(arch)
    typer.echo(manifest_json(load_artifact(artifact_dir(settings))))


@app.command()
def path(arch: Annotated[str | None, typer.Option("--arch")] = None) -> None:
    """Print where the artifact lives (TAGGER_MODEL__DIR)."""
    typer.echo(str(artifact_dir(settings_for(arch))))
