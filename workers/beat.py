"""The nightly backfill schedule, built from Settings.

One beat entry per configured target, all on the same crontab. Beat only *sends* the task;
the task takes the prefix's Redis lock, so two beats (a rolling deploy, a mistaken replica)
or a night that runs into the next never backfill one prefix twice at once.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from tagger.backfill import Target
from tagger.config import Settings
from tagger.queueing import BACKFILL_TASK


def parse_crontab(text: str) -> crontab:
    """``minute hour day-of-month month day-of-week``; a bad field fails when beat starts,
    not silently at 2 a.m."""
    try:
        return crontab.from_string(text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid backfill schedule {text!r}: {exc}") from exc


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    config = settings.backfill
    if not config.targets:
        return {}
    schedule = parse_crontab(config.schedule)
    queue = config.queue or settings.worker.queue
    entries: dict[str, dict[str, Any]] = {}
    for raw in config.targets:
        target = Target.parse(raw)
        entries[f"backfill {target.uri}"] = {
            "task": BACKFILL_TASK,
            "schedule": schedule,
            "kwargs": {"target": target.uri},
            "options": {"queue": queue},
        }
    return entries
