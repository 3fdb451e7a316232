"""Static int8 quantisation of a float ONNX model, calibrated on photos that ship in a package.

The detector and the safety model cost 40 and 20 core-ms per photo in float32 on this class of
CPU, three times the classifier; with int8 weights and activations (onnxruntime's QLinearConv,
which uses the CPU's VNNI dot products) they cost 13 and 7, which is what lets the default set
of analysers tag 45 photos/s on two cores. The classifier stays float32: its ImageNet accuracy
is a contract.

Calibration needs photos at build time and nothing may be downloaded, so it uses the photos
bundled inside scikit-image (astronaut, coffee, chelsea, rocket …) and crops of them, which
cover people, animals, food, objects, text and skin tones. Min/max calibration over the same
inputs gives the same scales, so a rebuild gives the same bytes. The build records how far the
int8 model's output moved from the float model's on those inputs (``parity_max_abs_diff``) and
the float model's checksum, in the artifact's manifest.

The classifier has an int8 variant too (``TAGGER_MODEL__PRECISION=int8``, see
:mod:`tagger.model.int8`): QDQ format, per-channel weights, and ``reduce_range`` (7-bit weights)
on CPUs without VNNI, where the AVX2 u8 x s8 kernels (``vpmaddubsw``) can saturate a 16-bit
intermediate sum and cost accuracy; with VNNI the full 8 bits are safe. :func:`cpu_has_vnni`
decides, a setting overrides.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from tagger.errors import ModelError

# Photos bundled in scikit-image's wheel (no pooch download): people, animals, food, objects,
# scenes, text, microscopy. The greyscale ones are converted to RGB.
CALIBRATION_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
    "retina", "colorwheel", "camera", "coins", "page", "moon", "brick", "grass", "gravel", "text",
)  # fmt: skip
CROPS_PER_PHOTO = 5  # the whole photo and its four quadrants
# The output probabilities stay float: in uint8 they would come in steps of 1/256, and a
# safety score of 0.001 or a detector score near its threshold would be rounded away.
FLOAT_OPS = frozenset({"Softmax", "Sigmoid"})

Prepare = Callable[[Image.Image], np.ndarray[Any, Any]]
QuantFormatName = Literal["QOperator", "QDQ"]
# /proc/cpuinfo flags of x86 CPUs with 8-bit dot-product instructions (AVX512-VNNI, AVX-VNNI);
# onnxruntime's int8 GEMMs use them and do not saturate, so full-range weights are safe.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "avx_vnni_int8"})


class Quantization(BaseModel):
    """How an int8 artifact was made from the float model, for its manifest."""

    method: Literal["onnxruntime.quantization.quantize_static"] = (
        "onnxruntime.quantization.quantize_static"
    )
    format: QuantFormatName = "QOperator"
    weights: str = "int8, per channel"
    activations: Literal["uint8, asymmetric, min/max calibration"] = (
        "uint8, asymmetric, min/max calibration"
    )
    per_channel: bool = True
    reduce_range: bool = Field(
        default=False, description="weights in 7 bits, for CPUs without VNNI (see cpu_has_vnni)"
    )
    calibration_method: Literal["MinMax"] = "MinMax"
    float_ops: list[str] = Field(default_factory=lambda: sorted(FLOAT_OPS))
    calibration: str = Field(description="the photos the activation ranges come from")
    calibration_samples: int
    float_sha256: str = Field(description="checksum of the float model that was quantised")
    parity_output: str
    parity_max_abs_diff: float = Field(
        description="largest |int8 - float| of parity_output over the calibration inputs"
    )
    onnxruntime: str


def calibration_images() -> list[Image.Image]:
    """The calibration photos and their quadrants, as RGB pictures."""
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelError(
            "quantising needs scikit-image's bundled photos: pip install 'tagger[build]'"
        ) from exc
    images: list[Image.Image] = []
    for name in CALIBRATION_PHOTOS:
        pixels = np.asarray(getattr(data, name)())
        if pixels.dtype != np.uint8:
            pixels = (pixels.astype(np.float64) / max(float(pixels.max()), 1e-9) * 255).astype(
                np.uint8
            )
        image = Image.fromarray(pixels).convert("RGB")
        width, height = image.size
        half_w, half_h = width // 2, height // 2
        images.append(image)
        for x, y in ((0, 0), (half_w, 0), (0, half_h), (half_w, half_h)):
            images.append(image.crop((x, y, x + half_w, y + half_h)))
    return images


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over prepared inputs, one photo a time."""

    def __init__(self, name: str, inputs: Sequence[np.ndarray[Any, Any]]) -> None:
        self._items: Iterator[dict[str, np.ndarray[Any, Any]]] = iter(
            {name: item[np.newaxis]} for item in inputs
        )

    def get_next(self) -> dict[str, np.ndarray[Any, Any]] | None:
        return next(self._items, None)


def cpu_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has 8-bit dot-product instructions (x86 VNNI; ARM's ``asimddp``), so
    int8 weights may use their full range. Unknown (no /proc/cpuinfo) counts as no: 7-bit
    weights are a little less precise everywhere but never saturate."""
    try:
        text = cpuinfo.read_text("utf-8", errors="replace")
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & (VNNI_FLAGS | {"asimddp"}))


def quantize_int8(
    source: Path,
    destination: Path,
    *,
    input_name: str,
    parity_output: str,
    prepare: Prepare,
    float_sha256: str,
    quant_format: QuantFormatName = "QOperator",
    per_channel: bool = True,
    reduce_range: bool = False,
) -> Quantization:
    """Write the int8 model of ``source`` to ``destination``; ``prepare`` makes one photo into
    the model's input exactly as the analyser does at run time."""
    inputs = calibration_inputs(prepare)
    quantize_model(
        source,
        destination,
        input_name=input_name,
        inputs=inputs,
        quant_format=quant_format,
        per_channel=per_channel,
        reduce_range=reduce_range,
    )
    reference, quantised = run_both(source, destination, input_name, parity_output, inputs)
    return describe(
        inputs=inputs,
        float_sha256=float_sha256,
        parity_output=parity_output,
        parity_max_abs_diff=max_abs_diff(reference, quantised),
        quant_format=quant_format,
        per_channel=per_channel,
        reduce_range=reduce_range,
    )


def calibration_inputs(prepare: Prepare) -> list[np.ndarray[Any, Any]]:
    """The calibration photos and crops, each made into the model's input by ``prepare``."""
    return [prepare(image) for image in calibration_images()]


def quantize_model(
    source: Path,
    destination: Path,
    *,
    input_name: str,
    inputs: Sequence[np.ndarray[Any, Any]],
    quant_format: QuantFormatName,
    per_channel: bool,
    reduce_range: bool,
) -> None:
    """onnxruntime's static quantiser with min/max ranges over ``inputs``: deterministic, so
    the same float model and inputs give the same bytes."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        op_types = {node.op_type for node in onnx.load(str(prepared)).graph.node}
        quantize_static(
            str(prepared),
            str(destination),
            _Reader(input_name, inputs),
            quant_format=QuantFormat.QDQ if quant_format == "QDQ" else QuantFormat.QOperator,
            op_types_to_quantize=sorted(op_types - FLOAT_OPS),
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def describe(
    *,
    inputs: Sequence[np.ndarray[Any, Any]],
    float_sha256: str,
    parity_output: str,
    parity_max_abs_diff: float,
    quant_format: QuantFormatName,
    per_channel: bool,
    reduce_range: bool,
) -> Quantization:
    """The manifest record of one quantisation."""
    return Quantization(
        format=quant_format,
        weights=f"int8{' (7-bit range)' if reduce_range else ''}, "
        f"{'per channel' if per_channel else 'per tensor'}",
        per_channel=per_channel,
        reduce_range=reduce_range,
        calibration="scikit-image bundled photos "
        f"({', '.join(CALIBRATION_PHOTOS)}), each whole and as its four quadrants",
        calibration_samples=len(inputs),
        float_sha256=float_sha256,
        parity_output=parity_output,
        parity_max_abs_diff=parity_max_abs_diff,
        onnxruntime=importlib.metadata.version("onnxruntime"),
    )


def run_both(
    source: Path,
    quantised: Path,
    input_name: str,
    output: str,
    inputs: Sequence[np.ndarray[Any, Any]],
    batch_size: int = 32,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``output`` of the float and the int8 model on ``inputs``, as float64 arrays."""
    import onnxruntime as ort

    outputs = []
    for path in (source, quantised):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        parts = []
        for start in range(0, len(inputs), batch_size):
            batch = np.stack(inputs[start : start + batch_size])
            (values,) = session.run([output], {input_name: batch})
            parts.append(np.asarray(values, np.float64))
        outputs.append(np.concatenate(parts))
    return outputs[0], outputs[1]


def max_abs_diff(reference: np.ndarray[Any, Any], quantised: np.ndarray[Any, Any]) -> float:
    return round(float(np.abs(reference - quantised).max()), 6)
