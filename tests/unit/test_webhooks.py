"""Webhook verification is pure: signature, freshness and payload shape."""

import json

import pytest

from compoundry.registry.webhooks import WebhookRejected, sign, verify_delivery

SECRET = "s3cret"
NOW = 1_800_000_000.0
BODY = json.dumps({"entity": "model_version", "action": "created", "timestamp": "x",
                   "data": {"name": "m", "version": "3", "tags": {"a": "b"}}})


def headers(secret=SECRET, ts=str(int(NOW)), delivery="d-1", body=BODY):
    return {"X-MLflow-Signature": sign(secret, delivery, ts, body), "X-MLflow-Timestamp": ts,
            "X-MLflow-Delivery-Id": delivery}


def test_valid_delivery_is_parsed():
    event = verify_delivery(SECRET, headers(), BODY.encode(), now=NOW)
    assert (event.event, event.model_name, event.version, event.delivery_id) == ("model_version.created", "m", "3", "d-1")


def test_signature_matches_mlflows_own_implementation():
    from mlflow.webhooks.delivery import _generate_hmac_signature

    assert sign(SECRET, "d", "1", BODY) == _generate_hmac_signature(SECRET, "d", "1", BODY)


@pytest.mark.parametrize("mutate, reason", [
    (lambda h: h | {"X-MLflow-Signature": sign("other", "d-1", str(int(NOW)), BODY)}, "signature"),
    (lambda h: {k: v for k, v in h.items() if k != "X-MLflow-Signature"}, "missing"),
    (lambda h: h | {"X-MLflow-Delivery-Id": "d-2"}, "signature"),
    (lambda h: headers(ts=str(int(NOW) - 301)), "tolerance"),
    (lambda h: headers(ts=str(int(NOW) + 301)), "tolerance"),
    (lambda h: h | {"X-MLflow-Timestamp": "yesterday"}, "unix time"),
])
def test_bad_deliveries_are_rejected(mutate, reason):
    with pytest.raises(WebhookRejected, match=reason):
        verify_delivery(SECRET, mutate(headers()), BODY.encode(), now=NOW)


def test_tampered_body_is_rejected():
    with pytest.raises(WebhookRejected, match="signature"):
        verify_delivery(SECRET, headers(), BODY.replace('"3"', '"4"').encode(), now=NOW)


def test_signed_garbage_is_rejected():
    body = "not json"
    with pytest.raises(WebhookRejected, match="payload"):
        verify_delivery(SECRET, headers(body=body), body.encode(), now=NOW)


def test_header_names_are_case_insensitive():
    lowered = {k.lower(): v for k, v in headers().items()}
    assert verify_delivery(SECRET, lowered, BODY.encode(), now=NOW).version == "3"
