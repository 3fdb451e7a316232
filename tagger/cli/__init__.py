"""The ``tagger`` command: local tagging on the embedded defaults, the model, and the service."""

from __future__ import annotations

import sys

from pydantic import ValidationError
from rich.console import Console

from tagger.cli.app import app
from tagger.errors import TaggerError

__all__ = ["app", "main"]


def main() -> None:
    """The console entry point: configuration mistakes and typed failures become one clear
    message and a non-zero exit, not a traceback."""
    err = Console(stderr=True)
    try:
        app()
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        err.print("[red]invalid configuration[/red] (TAGGER_* environment variables):")
        for problem in exc.errors():
            name = "TAGGER_" + "__".join(str(part) for part in problem["loc"]).upper()
            err.print(f"  {name}: {problem['msg']} (got {problem.get('input')!r})")
        sys.exit(2)
    except TaggerError as exc:
        err.print(f"[red]error:[/red] {exc.reason}")
        sys.exit(1)
