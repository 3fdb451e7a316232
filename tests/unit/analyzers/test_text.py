"""The opt-in ``text`` analyser: words read from a photo, searchable, from verified copies of
the OCR models that ``rapidocr-onnxruntime`` ships (the ``text`` extra)."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from tagger.config import Settings
from tagger.errors import ModelError
from tagger.model.build_text import MANIFEST_FILE, build_text_artifact, load_text_manifest
from tagger.model.registry import ensure_built

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("rapidocr_onnxruntime") is None,
    reason="rapidocr-onnxruntime is not installed (pip install 'tagger[text]')",
)


@pytest.fixture(scope="session")
def text_dir(model_dir: Path) -> Path:
    path = model_dir / "text"
    ensure_built(path, load_text_manifest, build_text_artifact, allowed=True)
    return path


def sign(lines: list[tuple[str, int]], size: tuple[int, int] = (900, 520)) -> Image.Image:
    """A shop sign: big light letters on a dark board, as a photo would show one."""
    image = Image.new("RGB", size, (40, 70, 120))
    draw = ImageDraw.Draw(image)
    top = 60
    for text, height in lines:
        draw.text((60, top), text, fill=(250, 240, 200), font=ImageFont.load_default(size=height))
        top += int(height * 1.8)
    return image


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def test_text_is_opt_in() -> None:
    assert "text" not in Settings().analyzers


def test_the_manifest_names_the_package_its_licence_and_checksums(text_dir: Path) -> None:
    manifest = json.loads((text_dir / MANIFEST_FILE).read_text("utf-8"))
    assert manifest["package"] == "rapidocr-onnxruntime" and manifest["downloaded"] is False
    assert manifest["package_licence"].startswith("Apache-2.0")
    assert manifest["licence"].startswith("Apache-2.0")
    assert set(manifest["files"]) == {"det", "cls", "rec"}
    assert all((text_dir / name).is_file() for name in manifest["sha256"])


def test_a_modified_model_file_is_refused(text_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "text"
    shutil.copytree(text_dir, copy)
    rec = copy / json.loads((copy / MANIFEST_FILE).read_text("utf-8"))["files"]["rec"]
    data = bytearray(rec.read_bytes())
    data[len(data) // 2] ^= 1
    rec.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="refusing a modified model"):
        load_text_manifest(copy)


def test_words_of_a_sign_become_searchable_tags(
    text_dir: Path, tmp_path: Path, model_dir: Path
) -> None:
    from tagger.pipeline import Pipeline, tag_and_store
    from tagger.store import SqlTagStore

    photo = tmp_path / "shop.jpg"
    photo.write_bytes(jpeg(sign([("BAKERY", 110), ("Fresh bread", 80)])))
    blank = tmp_path / "wall.jpg"
    blank.write_bytes(jpeg(Image.new("RGB", (640, 480), (120, 130, 140))))
    settings = Settings(
        data_dir=tmp_path / "data", model_dir=model_dir, analyzers=["colours", "text"]
    )
    store = SqlTagStore.from_settings(settings)
    with Pipeline.from_settings(settings, allow_local_paths=True) as pipeline:
        results = [
            r
            for batch in tag_and_store(pipeline, store, [str(photo), str(blank)])
            for r in batch.results
        ]
    shop, wall = results
    assert shop.text == ["BAKERY", "Fresh bread"]
    words = {tag.name: tag.parents for tag in shop.analyzers["text"].tags}
    assert words == {"bakery": ["text"], "fresh": ["text"], "bread": ["text"]}
    assert wall.text == [] and wall.analyzers["text"].tags == []
    assert [hit.ref for hit in store.search(["bread"])] == [shop.ref]
    assert [hit.ref for hit in store.search(["text"])] == [shop.ref]
    store.close()
