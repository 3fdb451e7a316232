"""Structured logs: one JSON object per line, one line per event.

Used by the worker and the listeners so log pipelines can filter on fields (job id, counts,
model version) instead of parsing prose. Messages name photo references, never credentials:
URLs are logged through :func:`tagger.sources.redact_url` by the code that has them.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_json_logging(level: int | str = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
