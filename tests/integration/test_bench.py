"""`tagger bench` and `bench-backfill` run end to end on real servers (figures not judged here:
timing belongs to the benchmark itself, not to a test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagger.config import Settings
from tagger_dev.bench import run_backfill_bench, run_bench
from tagger_dev.bench_phone import run_phone_bench
from tagger_dev.bench_search import run_search_bench

pytestmark = pytest.mark.integration


@pytest.fixture
def folder(sample_photos: dict[str, bytes], tmp_path: Path) -> Path:
    """The sample photos as files in a folder, as the benchmarks take them."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, data in sample_photos.items():
        (photos / f"{name}.jpg").write_bytes(data)
    return photos


def test_bench_measures_every_layer(
    model_dir: Path, artifact: object, folder: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    report = run_bench(
        Settings(model_dir=model_dir, data_dir=tmp_path / "data"),
        folder,
        copies=2,
        naive_photos=2,
        repeat=1,
        say=lines.append,
    )
    assert report.photos == 8 and report.naive_photos == 2
    for rate in (
        report.model_limit,
        report.compute_limit,
        report.service_local,
        report.service_s3,
        report.naive_peer,
    ):
        assert rate is not None and rate > 0
    assert report.ratio_service_to_compute == report.service_local / report.compute_limit
    assert {"decode+preprocess", "inference", "s3 client GET", "store save (SQLite)"} <= set(
        report.cpu_ms_per_photo
    )
    assert any(line.startswith("6. ratio 3/2") for line in lines)


def test_bench_backfill_submits_what_is_not_tagged(
    model_dir: Path, artifact: object, tmp_path: Path
) -> None:
    report = run_backfill_bench(
        Settings(model_dir=model_dir, data_dir=tmp_path),
        objects=60,
        already_tagged=0.25,
        say=lambda _: None,
    )
    assert (report.objects, report.already_tagged, report.submitted) == (60, 15, 45)
    assert report.rate > 0


def test_bench_search_measures_both_backends(
    model_dir: Path, artifact: object, folder: Path, sample_photos: dict[str, bytes], tmp_path: Path
) -> None:
    report = run_search_bench(
        Settings(model_dir=model_dir, data_dir=tmp_path / "data"),
        folder,
        photos=600,
        backends=["sqlite", "postgresql"],
        queries=20,
        say=lambda _: None,
    )
    assert report.real_photos == len(sample_photos) and report.dims > 1280
    assert [f.backend for f in report.backends] == ["sqlite-vec", "pgvector"]
    for figures in report.backends:
        assert figures.photos == 600 and figures.load_per_s > 0 and figures.index_mb > 0
        assert 0 < figures.similar_p50_ms <= figures.similar_p95_ms
        # at this size the candidates cover most of the library: exact search is found
        assert figures.recall_at_10 >= 0.95
        assert figures.text_hits_median > 0


def test_bench_phone_reports_every_format(
    model_dir: Path, artifact: object, folder: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    report = run_phone_bench(
        Settings(model_dir=model_dir, data_dir=tmp_path / "data"),
        folder,
        photos=2,
        copies=1,
        repeat=1,
        size=(800, 600),
        say=lines.append,
    )
    assert [f.name for f in report.formats] == ["small JPEG", "phone JPEG", "phone HEIC"]
    small, jpeg, heic = report.formats
    assert jpeg.size in ("800x600", "600x800") and heic.size in ("800x600", "600x800")
    assert jpeg.mb_per_photo > small.mb_per_photo
    for figures in report.formats:
        assert figures.photos == 2
        for rate in (
            figures.decode_analysers_limit,
            figures.compute_limit,
            figures.service_local,
            figures.service_s3,
        ):
            assert rate > 0
        assert 0 < figures.worker_peak_rss_mb < report.memory_budget_mb
    assert heic.decode_simplejpeg_ms is None and jpeg.decode_simplejpeg_ms is not None
    table = [line for line in lines if line.startswith(("D. service, S3", "worker peak RSS"))]
    assert len(table) == 2 and all(len(line.split()) >= 6 for line in table)
