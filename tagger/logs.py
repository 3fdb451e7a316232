"""Structured logs: one JSON object per line, one line per event, never a secret.

Used by the worker and the listeners so log pipelines can filter on fields (job id, counts,
model version) instead of parsing prose. Code passes fields as ``extra``; messages are
constant strings.

Secrets: the code that holds a presigned URL logs its redacted form (Celery is given a
redacted ``kwargsrepr`` for the task body). :class:`RedactingFilter` is the second line of
defence for what a library formats by itself — an exception message quoting a URL, a
third-party log line: every ``http(s)://`` URL in a record's message, arguments or extra
fields loses its query string, where signatures, credentials and tokens travel.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Final

from pythonjsonlogger.json import JsonFormatter

_URL_QUERY: Final = re.compile(r"(?i)(\bhttps?://[^\s?#\"'<>]+)\?[^\s#\"'<>]*")
_STANDARD: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def redact_text(text: str) -> str:
    """``https://h/p.jpg?X-Amz-Signature=…`` → ``https://h/p.jpg?<redacted>``, anywhere in
    ``text``."""
    if "://" not in text:
        return text
    return _URL_QUERY.sub(r"\1?<redacted>", text)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: _redact(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(inner) for inner in value)
    return value


class RedactingFilter(logging.Filter):
    """Rewrites a record in place so no handler after it can print a URL's query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logging module's to report
            return True
        redacted = redact_text(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD:
                record.__dict__[name] = _redact(value)
        if record.exc_info and record.exc_info[1] is not None:
            # Formatted here, redacted, and the live exception dropped, so a formatter cannot
            # format it again from the original.
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = redact_text(text), None
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def configure_json_logging(level: int | str = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
