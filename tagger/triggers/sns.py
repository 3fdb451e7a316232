"""Confirming SNS subscriptions that deliver bucket notifications to a listener.

SNS sends a ``SubscriptionConfirmation`` (with a ``SubscribeURL``) before it delivers anything
to a new HTTP endpoint or cross-account queue. Fetching that URL would make the listener GET an
address chosen by whoever can POST to it; instead the topic ARN and token go to the SNS API's
``ConfirmSubscription`` through boto3, whose endpoint comes from Settings, so no URL from a
message is ever dereferenced. Only topics on the ``triggers.topic_arns`` list are confirmed
when that list is set; otherwise the request is logged for an operator.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tagger.config import Settings
from tagger.triggers.parser import SubscriptionConfirmation

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

log = logging.getLogger(__name__)


class ConfirmationFailed(Exception):
    """SNS refused or could not be reached; the confirmation may be retried."""


class SubscriptionConfirmer:
    """Confirms (or reports) SNS subscription requests found in notifications."""

    def __init__(self, settings: Settings, client: SNSClient | None = None) -> None:
        self._settings = settings
        self._client = client

    def confirm(self, request: SubscriptionConfirmation) -> str | None:
        """The confirmed subscription's ARN, or None when policy says to leave it to a person.

        Raises :class:`ConfirmationFailed` when SNS says no or cannot be reached.
        """
        triggers = self._settings.triggers
        topic = request.topic_arn
        if not triggers.confirm_subscriptions:
            log.warning(
                "sns subscription not confirmed (disabled by settings)", extra={"topic": topic}
            )
            return None
        if triggers.topic_arns and topic not in triggers.topic_arns:
            log.warning("sns subscription refused (topic not listed)", extra={"topic": topic})
            return None
        try:
            reply = self._sns(topic).confirm_subscription(TopicArn=topic, Token=request.token)
        except (ClientError, BotoCoreError) as exc:
            raise ConfirmationFailed(f"confirming subscription to {topic}: {exc}") from exc
        arn = reply.get("SubscriptionArn", "")
        log.info("sns subscription confirmed", extra={"topic": topic, "subscription": arn})
        return arn

    def _sns(self, topic_arn: str) -> SNSClient:
        if self._client is not None:
            return self._client
        parts = topic_arn.split(":")
        region = parts[3] if len(parts) > 5 and parts[3] else self._settings.s3.region
        return boto3.client(
            "sns",
            region_name=region,
            endpoint_url=self._settings.triggers.sns_endpoint_url,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        )
