"""The nightly backfill schedule, from Settings (filled in with the backfill)."""

from __future__ import annotations

from typing import Any

from tagger.config import Settings


def beat_schedule(settings: Settings) -> dict[str, Any]:
    return {}
