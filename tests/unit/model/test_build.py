"""The exported ONNX graph computes what the Keras model computes, on real photos."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.config import ImageSettings
from tagger.errors import ModelError
from tagger.imaging import load_tensor
from tagger.model.build import block_specs, keras_model_for
from tagger.model.registry import ModelArtifact, build_artifact
from tagger.model.runtime import ModelRuntime
from tagger.model.torch_weights import load_state_dict


def test_onnx_equals_keras_on_real_photos(
    artifact: ModelArtifact, sample_photos: dict[str, bytes]
) -> None:
    spec = artifact.manifest.preprocess
    batch = np.stack(
        [load_tensor(data, ImageSettings(), spec)[0] for data in sample_photos.values()]
    )
    keras_probabilities, keras_embeddings = keras_model_for("lite0").predict(batch, verbose=0)
    onnx_probabilities, onnx_embeddings = ModelRuntime(artifact).predict(batch)
    assert np.abs(onnx_probabilities - keras_probabilities).max() < 1e-4
    assert np.abs(onnx_embeddings - keras_embeddings).max() < 1e-3
    assert (onnx_probabilities.argmax(1) == keras_probabilities.argmax(1)).all()
    # and the network is really the ImageNet one: chelsea is a cat (tabby/tiger/Egyptian cat)
    assert onnx_probabilities[0].argmax() in (281, 282, 285)


def test_the_build_is_reproducible(artifact: ModelArtifact, tmp_path: Path) -> None:
    """Workers that build on first use must agree on the model version."""
    again = build_artifact("lite0", tmp_path / "lite0")
    assert again.version == artifact.version


def test_block_structure_is_read_from_the_weights(artifact: ModelArtifact) -> None:
    from tagger.model.build import SOURCES

    specs = block_specs(load_state_dict(SOURCES["lite0"].path()))
    assert len(specs) == 16
    assert [s.stride for s in specs if s.stride == 2] == [2, 2, 2, 2]
    assert [s.kernel for s in specs][:4] == [3, 3, 3, 5]
    assert specs[0].expanded is None and specs[1].expanded == 96


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("owned",))


def test_the_weights_reader_refuses_foreign_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    buffer = io.BytesIO()
    for part in (0x1950A86A20F9469CFC6C, 1001, {}):
        pickle.dump(part, buffer, protocol=2)
    pickle.dump({"x": Evil()}, buffer, protocol=2)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ModelError, match=r"refusing to load \S*\.print"):
        load_state_dict(path)


def test_the_weights_reader_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "photo.pth"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ModelError):
        load_state_dict(path)
