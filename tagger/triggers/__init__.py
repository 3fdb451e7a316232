"""S3 event notifications → photo refs → submitted jobs.

:mod:`~tagger.triggers.parser` reads every envelope S3 events arrive in (SQS, SNS, EventBridge,
MinIO webhooks, Lambda); :mod:`~tagger.triggers.sqs` and :mod:`~tagger.triggers.webhook` are
the long-running listeners; :func:`~tagger.triggers.aws_lambda.lambda_handler` is the AWS
Lambda entry point, configured as ``tagger.triggers.aws_lambda.lambda_handler`` or, as older
deployments have it, ``tagger.triggers.lambda_handler``.

The handler is imported lazily (module ``__getattr__``): it builds a
:class:`~tagger.client.TaggerClient`, so an eager import here would load Celery, kombu and
SQLAlchemy into every process that only wants the pure parser, the package being imported
before any of its modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tagger.triggers.parser import (
    EventBatch,
    EventTooLarge,
    MalformedEvent,
    ObjectCreated,
    SubscriptionConfirmation,
    parse_notification,
)

if TYPE_CHECKING:
    from tagger.triggers.aws_lambda import lambda_handler

__all__ = [
    "EventBatch",
    "EventTooLarge",
    "MalformedEvent",
    "ObjectCreated",
    "SubscriptionConfirmation",
    "lambda_handler",
    "parse_notification",
]


def __getattr__(name: str) -> Any:
    """``tagger.triggers.lambda_handler``, imported on first use (the Lambda runtime resolves
    the handler path with a plain attribute lookup, which lands here)."""
    if name == "lambda_handler":
        from tagger.triggers.aws_lambda import lambda_handler

        return lambda_handler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
