"""The int8 classifier, quantised from the fp32 artifact and installed beside it.

``TAGGER_MODEL__PRECISION=int8`` makes the classify analyser run ``<model_dir>/<arch>-int8``:
onnxruntime's static quantiser in QDQ format (which onnxruntime fuses into QLinearConv /
int8 GEMMs), per-channel int8 weights, uint8 activations with min/max ranges over the
calibration photos that ship inside scikit-image (see :mod:`tagger.model.quantize`), and
``reduce_range`` on CPUs without VNNI. The output probabilities stay float.

An int8 model is only installed once it passed a gate, recorded in its manifest:

- ``dev-top1``, given labelled photos (``tagger model build --int8 --dev DIR``): its top-1 on
  them may be at most ``MAX_TOP1_DROP`` (1 point) below the fp32 model's;
- ``calibration-agreement`` otherwise (a clean clone has no labelled photos): int8 and fp32
  must name the same top-1 class on at least ``MIN_AGREEMENT`` of the calibration photos and
  crops. Many of those are not ImageNet scenes (microscopy, moon, text, textures), where fp32
  itself hesitates, so agreement there is far below that on real photos: measured on a VNNI
  CPU, 0.79 for full-range per-channel weights, 0.56 with ``reduce_range`` (both within a
  point of fp32 top-1 on 250 ImageNet dev photos), 0.35 for per-tensor weights (broken). The
  bound is 0.5.

Its version is its own checksum, so it differs from the fp32 one and every TagResult records
which of the two ran; the manifest also records the fp32 version it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tagger.errors import ModelError
from tagger.model.packages import tool_versions
from tagger.model.quantize import (
    Prepare,
    calibration_inputs,
    cpu_has_vnni,
    describe,
    max_abs_diff,
    quantize_model,
    run_both,
)
from tagger.model.registry import (
    MANIFEST_FILE,
    MODEL_FILE,
    VERSION_CHARS,
    AccuracyGate,
    Int8Provenance,
    ModelArtifact,
    load_artifact,
    sha256_file,
)
from tagger.model.staging import staged

MAX_TOP1_DROP = 0.01
MIN_AGREEMENT = 0.5
PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class DevSet:
    """Labelled photos for the accuracy gate, already made into the model's input."""

    name: str
    inputs: Sequence[np.ndarray[Any, Any]]
    targets: Sequence[int]


def decide_reduce_range(setting: bool | None) -> bool:
    """7-bit weights unless the CPU has VNNI; ``setting`` (True/False) overrides."""
    return (not cpu_has_vnni()) if setting is None else setting


def build_int8_artifact(
    fp32: ModelArtifact,
    destination: Path,
    *,
    prepare: Prepare,
    reduce_range: bool,
    dev: DevSet | None = None,
    per_channel: bool = True,
    min_agreement: float = MIN_AGREEMENT,
    max_top1_drop: float = MAX_TOP1_DROP,
) -> ModelArtifact:
    """Quantise ``fp32`` into ``destination`` and install it only if it passes the gate;
    otherwise raise :class:`ModelError` and leave ``destination`` as it was."""
    if fp32.manifest.precision != "fp32":
        raise ModelError(f"{fp32.path} is not an fp32 classifier")
    source = fp32.onnx_path
    input_name = fp32.manifest.input_name
    inputs = calibration_inputs(prepare)
    with staged(destination) as staging:
        model = staging / MODEL_FILE
        quantize_model(
            source,
            model,
            input_name=input_name,
            inputs=inputs,
            quant_format="QDQ",
            per_channel=per_channel,
            reduce_range=reduce_range,
        )
        reference, quantised = run_both(source, model, input_name, PROBABILITIES, inputs)
        agreement = _agreement(reference, quantised)
        if dev is None:
            gate = AccuracyGate(
                kind="calibration-agreement",
                photos=len(inputs),
                source="the calibration photos and crops",
                agreement=agreement,
                min_agreement=min_agreement,
            )
            if agreement < min_agreement:
                raise ModelError(
                    f"int8 classifier refused: it agrees with fp32 on the top-1 class of "
                    f"{agreement:.1%} of the calibration photos, below {min_agreement:.0%}"
                )
        else:
            gate = _dev_gate(source, model, input_name, dev, max_top1_drop)
        (staging / fp32.manifest.labels_file).write_bytes(
            (fp32.path / fp32.manifest.labels_file).read_bytes()
        )
        digest = sha256_file(model)
        manifest = fp32.manifest.model_copy(
            update={
                "name": f"{fp32.manifest.name}-int8",
                "version": digest[:VERSION_CHARS],
                "sha256": digest,
                "precision": "int8",
                "builder": {**fp32.manifest.builder, **tool_versions("onnx", "onnxruntime")},
                "int8": Int8Provenance(
                    fp32_version=fp32.version,
                    quantization=describe(
                        inputs=inputs,
                        float_sha256=fp32.manifest.sha256,
                        parity_output=PROBABILITIES,
                        parity_max_abs_diff=max_abs_diff(reference, quantised),
                        quant_format="QDQ",
                        per_channel=per_channel,
                        reduce_range=reduce_range,
                    ),
                    gate=gate,
                ),
                "created_at": datetime.now(UTC),
            }
        )
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2), "utf-8")
    return load_artifact(destination)


def _agreement(reference: np.ndarray[Any, Any], quantised: np.ndarray[Any, Any]) -> float:
    return round(float((reference.argmax(1) == quantised.argmax(1)).mean()), 4)


def _dev_gate(
    source: Path, model: Path, input_name: str, dev: DevSet, max_top1_drop: float
) -> AccuracyGate:
    if not dev.inputs:
        raise ModelError(f"no labelled photos in {dev.name} for the int8 accuracy gate")
    reference, quantised = run_both(source, model, input_name, PROBABILITIES, dev.inputs)
    targets = np.asarray(dev.targets)
    fp32_top1 = round(float((reference.argmax(1) == targets).mean()), 4)
    int8_top1 = round(float((quantised.argmax(1) == targets).mean()), 4)
    if int8_top1 < fp32_top1 - max_top1_drop - 1e-9:
        raise ModelError(
            f"int8 classifier refused: top-1 {int8_top1:.3f} on {dev.name} is more than "
            f"{max_top1_drop * 100:.0f} point below fp32's {fp32_top1:.3f}"
        )
    return AccuracyGate(
        kind="dev-top1",
        photos=len(dev.inputs),
        source=dev.name,
        agreement=_agreement(reference, quantised),
        fp32_top1=fp32_top1,
        int8_top1=int8_top1,
        max_top1_drop=max_top1_drop,
    )
