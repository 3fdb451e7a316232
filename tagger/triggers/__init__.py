"""S3 event notifications → photo refs → submitted jobs.

:mod:`~tagger.triggers.parser` reads every envelope S3 events arrive in (SQS, SNS, EventBridge,
MinIO webhooks, Lambda); :mod:`~tagger.triggers.sqs` and :mod:`~tagger.triggers.webhook` are
the long-running listeners; :func:`lambda_handler` is the AWS Lambda entry point
(``tagger.triggers.lambda_handler``).
"""

from tagger.triggers.aws_lambda import lambda_handler
from tagger.triggers.parser import (
    EventBatch,
    MalformedEvent,
    ObjectCreated,
    SubscriptionConfirmation,
    parse_notification,
)

__all__ = [
    "EventBatch",
    "MalformedEvent",
    "ObjectCreated",
    "SubscriptionConfirmation",
    "lambda_handler",
    "parse_notification",
]
