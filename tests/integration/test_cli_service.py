"""`tagger submit`, `status` and `failures` against the real service, as an operator uses them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.cli import app
from tagger.config import Settings
from tagger_dev.devservers import CeleryWorker, settings_env

pytestmark = pytest.mark.integration


def test_submit_from_a_file_then_follow_the_job(
    service_settings: Settings,
    moto_s3: object,
    start_worker: Callable[..., CeleryWorker],
    sample_photos: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name, value in settings_env(service_settings).items():
        monkeypatch.setenv(name, value)
    moto_s3.create_bucket(Bucket="cli-photos")  # type: ignore[attr-defined]
    moto_s3.put_object(Bucket="cli-photos", Key="cat.jpg", Body=sample_photos["chelsea"])  # type: ignore[attr-defined]
    moto_s3.put_object(Bucket="cli-photos", Key="bad.jpg", Body=b"%PDF-1.7 not a photo")  # type: ignore[attr-defined]
    refs = tmp_path / "refs.txt"
    refs.write_text("s3://cli-photos/cat.jpg\n\ns3://cli-photos/bad.jpg\n")
    start_worker(service_settings)
    runner = CliRunner()

    refused = runner.invoke(app, ["submit", "s3://cli-photos/cat.jpg", "gopher://x/y"])
    assert refused.exit_code == 2 and "nothing was submitted" in refused.output

    submitted = runner.invoke(app, ["submit", "--from-file", str(refs), "--wait"])
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip().splitlines()[0]
    status = json.loads(runner.invoke(app, ["status", job_id]).stdout)
    assert status == {
        "total": 2,
        "queued": 0,
        "done": 1,
        "failed": 1,
        "skipped": 0,
        "finished": True,
    }

    failures = runner.invoke(app, ["failures", "--json"])
    failed = [json.loads(line) for line in failures.stdout.splitlines()]
    assert [(f["ref"], f["error"]) for f in failed] == [("s3://cli-photos/bad.jpg", "not_an_image")]
    assert "PDF" in failed[0]["reason"]

    assert runner.invoke(app, ["status", "no-such-job"]).exit_code == 1
