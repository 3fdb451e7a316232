"""The gallery as people use it, in a real headless Chromium (Debian's ``chromium``, driven by
Playwright): photos tagged with ``tagger tag`` on the embedded defaults, then ``tagger serve``;
the test browses, searches, opens a photo, sees its boxes, colours and similar photos, and
saves a screenshot of each page (``SCREENSHOT_DIR`` keeps them; by default the test's
temporary folder)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tagger.config import Settings
from tests.integration.services import ApiServer, settings_env

pytestmark = pytest.mark.integration


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise AssertionError("Debian's chromium is required: apt-get install chromium")
    return found


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def tagged_folder(
    settings: Settings, photos_with_mirrored_cat: dict[str, bytes], tmp_path: Path
) -> Path:
    """The sample photos tagged by ``tagger tag FOLDER``, as after ``tagger tag ~/Pictures``."""
    folder = tmp_path / "Pictures"
    folder.mkdir()
    for name, data in photos_with_mirrored_cat.items():
        (folder / f"{name}.jpg").write_bytes(data)
    # a portrait stored sideways with its EXIF orientation, as phones do
    upright = Image.open(io.BytesIO(photos_with_mirrored_cat["astronaut"])).crop((100, 0, 400, 512))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.rotate(90, expand=True).save(folder / "astronaut-phone.jpg", exif=exif, quality=90)
    env = {**os.environ, **settings_env(settings)}
    done = subprocess.run(
        [sys.executable, "-m", "tagger", "tag", str(folder), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


@pytest.fixture
def gallery(settings: Settings, tagged_folder: Path, tmp_path: Path) -> Iterator[str]:
    server = ApiServer(settings, tmp_path / "serve.log")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def thumbnails_loaded(page: Page, selector: str) -> int:
    """How many of the thumbnails under ``selector`` the browser actually decoded."""
    return int(
        page.eval_on_selector_all(
            f"{selector} img", "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length"
        )
    )


def card_refs(page: Page, selector: str) -> list[str]:
    return list(
        page.eval_on_selector_all(f"{selector} .card", "cards => cards.map(c => c.dataset.ref)")
    )


def test_browse_search_open_a_photo_and_see_similar_ones(
    gallery: str, browser: Browser, tagged_folder: Path, shots: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(gallery)
    expect(page.locator("#grid .card")).to_have_count(6)
    page.wait_for_function("document.querySelectorAll('#grid img').length === 6")
    page.wait_for_function(
        "[...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert thumbnails_loaded(page, "#grid") == 6
    expect(page.locator("#facets")).to_contain_text("6 photos")
    expect(page.locator("#facets")).to_contain_text("cat")
    page.screenshot(path=shots / "1-gallery.png", full_page=True)

    page.fill("#q", "a cat")
    page.press("#q", "Enter")
    page.wait_for_url("**/?q=a+cat")
    expect(page.locator("#grid .card")).to_have_count(2)
    cats = {str(tagged_folder / "chelsea.jpg"), str(tagged_folder / "mirrored-cat.jpg")}
    assert set(card_refs(page, "#grid")) == cats
    expect(page.locator("#status")).to_contain_text("2 photos")
    page.screenshot(path=shots / "2-search-a-cat.png", full_page=True)

    page.locator("#grid .card-link").first.click()
    page.wait_for_url("**/photo?ref=*")
    expect(page.locator("#tags")).to_contain_text("cat")
    expect(page.locator("#colours .swatch").first).to_be_visible()
    expect(page.locator("#similar .card").first).to_be_visible()
    opened = page.locator("#ref").inner_text()
    assert card_refs(page, "#similar")[0] == (cats - {opened}).pop()
    page.wait_for_function("document.querySelector('#figure img').naturalWidth > 0")
    page.screenshot(path=shots / "3-photo-cat.png", full_page=True)

    page.locator("#tags .chip", has_text="animal").click()
    page.wait_for_url("**/?tag=animal")
    expect(page.locator("#grid .card")).to_have_count(2)

    page.goto(f"{gallery}/photo?ref={tagged_folder / 'astronaut-phone.jpg'}")
    box = page.locator("#figure .box", has_text="person")
    expect(box).to_have_count(1)
    frame = page.locator("#figure .frame").bounding_box()
    drawn = box.bounding_box()
    assert frame is not None and drawn is not None
    # the upright portrait is taller than wide and the person box lies inside it
    assert frame["height"] > frame["width"]
    assert drawn["x"] >= frame["x"] - 2 and drawn["y"] >= frame["y"] - 2
    assert drawn["x"] + drawn["width"] <= frame["x"] + frame["width"] + 2
    page.screenshot(path=shots / "4-photo-astronaut.png", full_page=True)
    assert errors == []
