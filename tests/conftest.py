"""Fixtures shared by unit and integration tests: the built model and sample photos."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.analyzers.registry import create_analyzers
from tagger.config import Settings
from tagger.model.labelset import LabelSet, load_labelset
from tagger.model.registry import ModelArtifact, artifact_dir, ensure_artifact
from tagger_dev.devservers import PgVectorServer
from tests.pg import PgServer


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """PostgreSQL with pgvector for the session, on a free loopback port, ended by its PID."""
    server = PgVectorServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    try:
        endpoint = PgServer("127.0.0.1", server.port, server.user, server.database)
        with endpoint.admin() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One lite0 artifact built from the packaged weights for the whole session."""
    root = tmp_path_factory.mktemp("models")
    return root


@pytest.fixture(scope="session")
def artifact(model_dir: Path) -> ModelArtifact:
    """The classifier's artifact; the default set's other models are built beside it, once,
    so every process of the session (workers, CLI, backfill) finds them all."""
    settings = Settings(model_dir=model_dir)
    built = ensure_artifact(settings)
    assert built.path == artifact_dir(settings)
    create_analyzers(settings)
    return built


@pytest.fixture
def settings(tmp_path: Path, model_dir: Path, artifact: ModelArtifact) -> Settings:
    """Embedded defaults in a private folder, with the session's model."""
    return Settings(
        data_dir=tmp_path / "data",
        model_dir=model_dir,
        labelsets_dir=tmp_path / "labelsets",
        feature_cache_dir=tmp_path / "features",
    )


def jpeg_bytes(pixels: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def sample_photos() -> dict[str, bytes]:
    """Real photos that scikit-image ships, as JPEG bytes."""
    from skimage import data

    names = ("chelsea", "coffee", "astronaut", "rocket")
    return {name: jpeg_bytes(np.asarray(getattr(data, name)())) for name in names}


@pytest.fixture(scope="session")
def photos_with_mirrored_cat(sample_photos: dict[str, bytes]) -> dict[str, bytes]:
    """The sample photos and the cat mirrored: the photo "more like this" must find first."""
    chelsea = Image.open(io.BytesIO(sample_photos["chelsea"]))
    mirrored = io.BytesIO()
    chelsea.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored, "JPEG", quality=90)
    return {**sample_photos, "mirrored-cat": mirrored.getvalue()}


@pytest.fixture
def write_photos(tmp_path: Path) -> Callable[[dict[str, bytes]], dict[str, Path]]:
    def write(photos: dict[str, bytes]) -> dict[str, Path]:
        folder = tmp_path / "photos"
        folder.mkdir(exist_ok=True)
        paths = {}
        for name, data in photos.items():
            path = folder / (name if "." in name else f"{name}.jpg")
            path.write_bytes(data)
            paths[name] = path
        return paths

    return write


@pytest.fixture(scope="session")
def logo_photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Labelled folders for `tagger train` (branded/ and plain/), from skimage photos: 24
    per label to train on and 20 per label held out."""
    from tests.photosets import write_logo_photos

    root = tmp_path_factory.mktemp("logo")
    write_logo_photos(root / "train", 24, seed=0)
    write_logo_photos(root / "test", 20, seed=1)
    return {"train": root / "train", "test": root / "test"}


@pytest.fixture(scope="session")
def brand_labelset(
    tmp_path_factory: pytest.TempPathFactory,
    model_dir: Path,
    artifact: ModelArtifact,
    logo_photos: dict[str, Path],
) -> LabelSet:
    """A label set trained once for the session ("brand": branded or plain), in its own
    label sets folder so activating it never touches another test's analysers."""
    pytest.importorskip("tensorflow")
    from tagger.training.train import TrainOptions, train_labelset

    settings = Settings(
        model_dir=model_dir,
        labelsets_dir=tmp_path_factory.mktemp("labelsets"),
        feature_cache_dir=tmp_path_factory.mktemp("features"),
    )
    report = train_labelset(settings, logo_photos["train"], TrainOptions(name="brand"))
    return load_labelset(report.path)
