"""The worker's /metrics refuses to serve what it could not see (the served case runs in
tests/integration/test_metrics_service.py, with real worker processes)."""

from __future__ import annotations

import logging

import pytest

from tagger.config import MetricsSettings, Settings
from tagger.queueing import make_celery
from workers.exposition import start_exposition


def test_off_when_the_port_is_zero() -> None:
    settings = Settings(metrics=MetricsSettings(port=0))
    assert start_exposition(make_celery(settings), settings) is False


def test_a_worker_started_without_multiprocess_mode_says_how_to_start_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """This test process imported prometheus_client without the variable, as a plain
    ``celery -A workers.app worker`` does: its children's counts would be invisible, so the
    main process serves nothing rather than numbers that look right and are not."""
    settings = Settings()
    with caplog.at_level(logging.WARNING, logger="workers.exposition"):
        assert start_exposition(make_celery(settings), settings) is False
    assert "tagger worker" in caplog.text
