"""MLflow webhook deliveries: verification (pure) and registration (adapter).

MLflow signs ``"{delivery_id}.{timestamp}.{body}"`` with HMAC-SHA256 and sends
``X-MLflow-Signature: v1,<base64>``. A delivery is accepted only with a valid
signature, a timestamp within the tolerance, and a delivery id not seen
before (the caller records ids; see `PlatformStore.record_delivery`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Mapping

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
EVENTS = ("model_version.created", "model_version_alias.created")
WEBHOOK_NAME = "compoundry-control-api"


class WebhookRejected(Exception):
    """The delivery must not be acted on; the message says why (never the secret)."""


@dataclass(frozen=True)
class WebhookEvent:
    delivery_id: str
    event: str                 # e.g. "model_version.created"
    data: dict[str, Any]

    @property
    def model_name(self) -> str | None:
        return self.data.get("name")

    @property
    def version(self) -> str | None:
        value = self.data.get("version")
        return str(value) if value is not None else None

    @property
    def alias(self) -> str | None:
        return self.data.get("alias")


def sign(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_delivery(secret: str, headers: Mapping[str, str], body: bytes, now: float,
                    tolerance_s: float = 300) -> WebhookEvent:
    """Check signature and freshness; return the parsed event or raise `WebhookRejected`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER.lower())
    timestamp = lowered.get(TIMESTAMP_HEADER.lower())
    delivery_id = lowered.get(DELIVERY_ID_HEADER.lower())
    if not (signature and timestamp and delivery_id):
        raise WebhookRejected("missing signature, timestamp or delivery id header")
    try:
        sent_at = float(timestamp)
    except ValueError as exc:
        raise WebhookRejected("timestamp is not a unix time") from exc
    if abs(now - sent_at) > tolerance_s:
        raise WebhookRejected(f"timestamp outside the {tolerance_s:.0f}s tolerance")
    text = body.decode("utf-8", errors="replace")
    expected = sign(secret, delivery_id, timestamp, text)
    if not hmac.compare_digest(expected, signature.strip()):
        raise WebhookRejected("signature does not match")
    try:
        payload = json.loads(text)
        event = f"{payload['entity']}.{payload['action']}"
        data = dict(payload.get("data") or {})
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookRejected("body is not an MLflow webhook payload") from exc
    return WebhookEvent(delivery_id=delivery_id, event=event, data=data)


def ensure_mlflow_webhook(settings) -> str:
    """Register (or repair) the control API's webhook in MLflow; returns its id.

    Idempotent: an existing webhook with our name is updated to the current URL
    and secret, so a changed gateway port or a reset secret heals on `up`.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_url, registry_uri=settings.mlflow_url)
    existing = [w for w in _all_webhooks(client) if w.name == WEBHOOK_NAME]
    for extra in existing[1:]:
        client.delete_webhook(extra.webhook_id)
    if existing:
        hook = client.update_webhook(
            existing[0].webhook_id, url=settings.webhook_url, events=list(EVENTS),
            secret=settings.webhook_secret, status="ACTIVE",
        )
    else:
        hook = client.create_webhook(
            name=WEBHOOK_NAME, url=settings.webhook_url, events=list(EVENTS),
            secret=settings.webhook_secret, description="compoundry: deploy on model version / alias events",
        )
    return hook.webhook_id


def _all_webhooks(client) -> list:
    hooks, token = [], None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        hooks.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return hooks
