"""``tagger model …``: build the artifact ahead of time and look at what is installed."""

from __future__ import annotations

from typing import Annotated

import typer

from tagger.analyzers.registry import build_models, installed_versions
from tagger.cli.local import Arch, settings_for
from tagger.model.registry import artifact_dir, load_artifact, manifest_json

app = typer.Typer(no_args_is_help=True)


@app.command()
def build(arch: Arch = None) -> None:
    """Build the ONNX models of the enabled analysers (TAGGER_ANALYZERS) from the weights inside
    their registry packages (needs the 'build' extra)."""
    settings = settings_for(arch)
    for name, version in build_models(settings).items():
        typer.echo(f"built {name} version {version} in {settings.model_dir}")


@app.command()
def info(arch: Arch = None) -> None:
    """Print the verified manifest of the installed classifier and the version of every
    enabled analyser (each model's checksum is verified)."""
    settings = settings_for(arch)
    versions = installed_versions(settings)
    typer.echo(manifest_json(load_artifact(artifact_dir(settings))))
    for name, version in versions.items():
        typer.echo(f"{name}\t{version}")


@app.command()
def path(arch: Annotated[str | None, typer.Option("--arch")] = None) -> None:
    """Print where the artifact lives (TAGGER_MODEL__DIR)."""
    typer.echo(str(artifact_dir(settings_for(arch))))
