"""``tagger model …``: build the artifact ahead of time and look at what is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tagger.analyzers.classify import build_int8
from tagger.analyzers.registry import build_models, installed_versions
from tagger.cli.local import Arch, settings_for
from tagger.config import Settings
from tagger.evaluation import labelled_photos
from tagger.imaging import load_tensor
from tagger.model.int8 import DevSet
from tagger.model.registry import (
    ModelArtifact,
    classifier_dir,
    ensure_artifact,
    load_artifact,
    manifest_json,
)

app = typer.Typer(no_args_is_help=True)


@app.command()
def build(
    arch: Arch = None,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="build only the int8 classifier from the fp32 one (built first if missing), "
            "beside it; refused when it fails the accuracy gate",
        ),
    ] = False,
    dev: Annotated[
        Path | None,
        typer.Option(
            help="labelled photos (<wnid>_*.JPEG, as `tagger eval` reads them) for the int8 "
            "gate: top-1 at most 1 point below fp32; without it, top-1 agreement with fp32 "
            "on the calibration photos",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    reduce_range: Annotated[
        bool | None,
        typer.Option(
            "--reduce-range/--no-reduce-range",
            help="int8 weights in 7 bits; default: only on CPUs without VNNI",
        ),
    ] = None,
) -> None:
    """Build the ONNX models of the enabled analysers (TAGGER_ANALYZERS) from the weights inside
    their registry packages (needs the 'build' extra); with --int8 the int8 classifier."""
    settings = settings_for(arch)
    if not int8:
        for name, version in build_models(settings).items():
            typer.echo(f"built {name} version {version} in {settings.model_dir}")
        return
    settings.model.build_if_missing = True
    if reduce_range is not None:
        settings.model.int8_reduce_range = reduce_range
    fp32 = ensure_artifact(settings)
    built = build_int8(settings, fp32=fp32, dev=dev_set(dev, fp32, settings) if dev else None)
    provenance = built.manifest.int8
    assert provenance is not None
    gate = provenance.gate
    typer.echo(
        f"built classify int8 version {built.version} (from fp32 {fp32.version}, reduce_range="
        f"{provenance.quantization.reduce_range}) in {built.path}; gate {gate.kind}: "
        + (
            f"top-1 {gate.int8_top1} vs fp32 {gate.fp32_top1} on {gate.photos} photos"
            if gate.kind == "dev-top1"
            else f"agreement {gate.agreement} on {gate.photos} calibration inputs"
        )
    )
    typer.echo("use it with TAGGER_MODEL__PRECISION=int8")


def dev_set(folder: Path, fp32: ModelArtifact, settings: Settings) -> DevSet:
    """The labelled photos of ``folder``, decoded and preprocessed as the pipeline does."""
    index = {label.wnid: i for i, label in enumerate(fp32.labels)}
    photos = [(path, wnid) for path, wnid in labelled_photos(folder) if wnid in index]
    if not photos:
        raise typer.BadParameter(f"no labelled photos (<wnid>_*.JPEG) in {folder}")
    spec = fp32.manifest.preprocess
    return DevSet(
        name=folder.name,
        inputs=[load_tensor(path.read_bytes(), settings.image, spec)[0] for path, _ in photos],
        targets=[index[wnid] for _, wnid in photos],
    )


@app.command()
def info(arch: Arch = None) -> None:
    """Print the verified manifest of the installed classifier and the version of every
    enabled analyser (each model's checksum is verified)."""
    settings = settings_for(arch)
    versions = installed_versions(settings)
    typer.echo(manifest_json(load_artifact(classifier_dir(settings))))
    for name, version in versions.items():
        typer.echo(f"{name}\t{version}")


@app.command()
def path(arch: Annotated[str | None, typer.Option("--arch")] = None) -> None:
    """Print where the artifact lives (TAGGER_MODEL__DIR)."""
    typer.echo(str(classifier_dir(settings_for(arch))))
