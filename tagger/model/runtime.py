"""The onnxruntime session that turns batches of tensors into probabilities and embeddings.

Creating a session costs hundreds of milliseconds and tens of megabytes, so a process makes
one (the CLI once per run, a Celery worker once per child process at ``worker_process_init``)
and feeds it batches; never one per photo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from tagger.errors import ModelError
from tagger.model.registry import ModelArtifact


def open_session(path: Path, intra_op_threads: int = 0) -> ort.InferenceSession:
    """The one way tagger opens a model: CPU, sequential, every graph optimisation, and
    ``intra_op_threads`` threads (0 = onnxruntime's choice, all cores). One per model per
    process; a worker process runs one thread per model, the CLI all cores."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class ModelRuntime:
    """A loaded, verified model ready to run batches."""

    def __init__(self, artifact: ModelArtifact, *, intra_op_threads: int = 0) -> None:
        self.artifact = artifact
        self._session = open_session(artifact.onnx_path, intra_op_threads)
        manifest = artifact.manifest
        outputs = {o.name: o.shape for o in self._session.get_outputs()}
        for name in manifest.output_names:
            if name not in outputs:
                raise ModelError(f"model has no output {name!r} (has {sorted(outputs)})")
        width = outputs[manifest.output_names[0]][-1]
        if width != len(artifact.labels):
            raise ModelError(f"model outputs {width} classes but has {len(artifact.labels)} labels")
        self._input = manifest.input_name
        self._outputs = list(manifest.output_names)

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def size(self) -> int:
        return self.artifact.manifest.preprocess.size

    def predict(
        self, batch: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Probabilities (N, classes) and embeddings (N, 1280) for an NHWC float32 batch."""
        if batch.ndim != 4 or batch.shape[1:] != (self.size, self.size, 3):
            raise ModelError(f"batch of shape {batch.shape} does not fit a {self.size}px model")
        probabilities, embeddings = self._session.run(
            self._outputs, {self._input: np.ascontiguousarray(batch, dtype=np.float32)}
        )
        return probabilities, embeddings
