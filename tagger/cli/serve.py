"""``tagger serve``: the HTTP API and the gallery in one uvicorn process (or several).

Without tokens (``TAGGER_API__TOKENS``) anyone who reaches the port may read and submit, so
the server then refuses to listen on anything but loopback: a laptop's gallery is open to its
owner only, and a fleet must configure tokens before it can expose the API.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from tagger import metrics
from tagger.api.app import create_app
from tagger.config import Settings
from tagger.logs import configure_json_logging

_CONFIG_ERROR = 2


def register(app: typer.Typer) -> None:
    app.command()(serve)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (TAGGER_API__HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (TAGGER_API__PORT)")] = None,
) -> None:
    """Serve the HTTP API (/v1, OpenAPI at /docs) and the photo gallery (/)."""
    err = Console(stderr=True)
    try:
        settings = Settings()
    except ValidationError as exc:
        err.print(f"[red]invalid settings:[/red] {escape(str(exc))}")
        raise typer.Exit(_CONFIG_ERROR) from None
    api = settings.api.model_copy(
        update={"host": host or settings.api.host, "port": port or settings.api.port}
    )
    settings = settings.model_copy(update={"api": api})
    if not api.tokens and not is_loopback(api.host):
        err.print(
            f"[red]refusing to serve on {escape(api.host)} without tokens:[/red] anyone "
            "reaching it could read and submit; set TAGGER_API__TOKENS or bind to 127.0.0.1"
        )
        raise typer.Exit(_CONFIG_ERROR)
    configure_json_logging()
    Console().print(f"tagger gallery and API on http://{api.host}:{api.port}/ (API docs: /docs)")
    if api.workers > 1:
        # Each process builds its app from the same environment, and counts its requests in
        # prometheus_client's multiprocess files, which every one of them serves merged.
        os.environ.update(metrics.multiprocess_env(settings.metrics, os.getpid()))
        uvicorn.run(
            "tagger.api.app:create_app",
            factory=True,
            host=api.host,
            port=api.port,
            workers=api.workers,
            log_config=None,
        )
    else:
        uvicorn.run(create_app(settings), host=api.host, port=api.port, log_config=None)
