"""``tagger listen sqs|http``: long-running listeners that turn bucket notifications into jobs.

Both serve their counters (events received, malformed, photos submitted; :mod:`tagger.metrics`)
at ``/metrics`` on ``TAGGER_METRICS__HOST:TAGGER_METRICS__LISTENER_PORT`` (9809; 0 = off),
apart from the webhook's own port, which senders on the internet may reach. Both stop
cleanly on SIGTERM or SIGINT and exit 0: the SQS listener finishes the poll in hand
(its submit and its deletes), the webhook stops accepting and submits what it had accepted.
Each logs one JSON line per event to stderr.

A configuration mistake (invalid TAGGER_* settings, a queue URL that is not one, a queue whose
region nothing names) is one red line and exit status 2, before anything connects; a queue
that does not exist or refuses us is exit status 1. Never a traceback: they are the operator's
to fix, not a bug's.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Annotated

import typer
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from tagger import metrics
from tagger.client import TaggerClient
from tagger.config import Settings
from tagger.logs import configure_json_logging
from tagger.triggers.sqs import QueueConfigError, SqsListener, sqs_client
from tagger.triggers.webhook import WebhookListener

log = logging.getLogger("tagger.cli.listen")  # by name: also right when run with -m

_CONFIG_ERROR = 2  # the exit status of a mistake in the configuration or the arguments

listen_app = typer.Typer(
    help="Listen for bucket notifications (SQS or webhook) and submit the new photos.",
    no_args_is_help=True,
)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM (a container stop) or SIGINT (Ctrl-C)."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info(
            "stop signal received; finishing current work",
            extra={"signal": signal.Signals(signum).name},
        )
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


@listen_app.command("sqs")
def sqs(
    queue_url: Annotated[str, typer.Argument(help="URL of the SQS queue S3 notifies")],
    wait: Annotated[
        int | None,
        typer.Option(
            min=0, max=20, help="long-poll seconds (default TAGGER_TRIGGERS__SQS_WAIT_SECONDS)"
        ),
    ] = None,
) -> None:
    """Long-poll an SQS queue of S3 notifications; delete each message once it is submitted."""
    configure_json_logging()
    err = Console(stderr=True)
    settings = _settings(err)
    if wait is not None:
        settings.triggers.sqs_wait_seconds = wait
    try:
        sqs = sqs_client(settings, queue_url)
    except (QueueConfigError, BotoCoreError, ValueError) as exc:
        err.print(f"[red]cannot use queue {escape(queue_url)}: {escape(str(exc))}[/red]")
        raise typer.Exit(_CONFIG_ERROR) from None
    stop = _stop_on_signals()
    with TaggerClient(settings) as client:
        listener = SqsListener(queue_url, settings, client, sqs=sqs)
        try:
            listener.check()
        except (ClientError, BotoCoreError) as exc:
            err.print(f"[red]cannot use queue {escape(queue_url)}: {escape(str(exc))}[/red]")
            raise typer.Exit(1) from None
        metrics.serve(settings.metrics.listener_port, settings.metrics.host)
        listener.run(stop)


@listen_app.command("http")
def http(
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="port (default TAGGER_TRIGGERS__HTTP_PORT)"),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="bind address (default TAGGER_TRIGGERS__HTTP_HOST)")
    ] = None,
) -> None:
    """Serve POST /events for webhook notifications (MinIO, SNS), with a bearer token."""
    configure_json_logging()
    err = Console(stderr=True)
    settings = _settings(err)
    token = settings.listener_token
    if token is None or not token.get_secret_value():
        err.print("[red]set TAGGER_LISTENER_TOKEN: the webhook refuses to run without one[/red]")
        raise typer.Exit(1)
    with TaggerClient(settings) as client:
        try:
            listener = WebhookListener(settings, client, host=host, port=port)
        except OSError as exc:
            err.print(f"[red]cannot listen: {escape(str(exc))}[/red]")
            raise typer.Exit(1) from None
        stop = _stop_on_signals()
        metrics.serve(settings.metrics.listener_port, settings.metrics.host)
        with listener:
            while not stop.wait(0.5):
                pass


def _settings(err: Console) -> Settings:
    """Settings from the environment, or one line naming what is wrong and exit status 2."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        err.print(f"[red]invalid TAGGER_* configuration: {escape(problems)}[/red]")
        raise typer.Exit(_CONFIG_ERROR) from None


def register(app: typer.Typer) -> None:
    app.add_typer(listen_app, name="listen")


def main() -> None:
    """``python -m tagger.cli.listen sqs|http …``: the listeners alone, e.g. as a container's
    command."""
    listen_app(prog_name="tagger listen")


if __name__ == "__main__":
    main()
