"""Helpers for tests that talk to the live localstripe (fixture `localstripe` in conftest)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import requests
from django.conf import settings

from billing import stripe_gateway

VISA = "4242424242424242"
DECLINED = "4000000000000341"  # declines on confirm (card_declined)
THREE_D_SECURE = "4000002500003155"  # requires_action


def card(number: str) -> str:
    """A PaymentMethod id for a test card number, created at localstripe as Stripe.js would."""
    pm = stripe_gateway.client().v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
    )
    return pm.id


def complete_3ds(base: str, intent_id: str, client_secret: str, *, success: bool = True) -> dict:
    """What Stripe.js's confirmCardPayment does in the browser: answer the 3-D Secure challenge."""
    response = requests.post(
        f"{base}/v1/payment_intents/{intent_id}/_authenticate",
        params={"success": "true" if success else "false"},
        data={"key": "pk_test_suite", "client_secret": client_secret},
        timeout=5,
    )
    response.raise_for_status()
    return response.json()


def intent_id_from_secret(client_secret: str) -> str:
    return client_secret.split("_secret_")[0]


def post_json(client, url: str, data=None, **extra):
    body = data if isinstance(data, (bytes, str)) else json.dumps(data if data is not None else {})
    return client.post(url, data=body, content_type="application/json", HTTP_ACCEPT="application/json", **extra)


def stripe_signature(payload: bytes, secret: str | None = None, *, timestamp: int | None = None) -> str:
    """The Stripe-Signature value Stripe sends with `payload`: HMAC-SHA256 of "<timestamp>.<raw body>"
    under the endpoint secret (default: ours), as "t=...,v1=...". Computed here rather than by the
    SDK, so a test does not check the SDK against itself."""
    secret = settings.STRIPE_WEBHOOK_SECRET if secret is None else secret
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def signed_headers(payload: bytes, secret: str | None = None, *, timestamp: int | None = None) -> dict:
    """The Stripe-Signature header Stripe would send for `payload` (for the test client)."""
    return {"HTTP_STRIPE_SIGNATURE": stripe_signature(payload, secret, timestamp=timestamp)}


def wait_for(condition, *, timeout: float = 15.0, interval: float = 0.05, message: str = "condition"):
    """Poll `condition()` until it is truthy or the deadline passes (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def legacy_token(base: str, number: str, *, email: str = "alice@example.com") -> dict:
    """The token object legacy Checkout / react-stripe-checkout hands the original client: created
    in the browser with the publishable key (`POST /v1/tokens`), plus the email Checkout asked for."""
    response = requests.post(
        f"{base}/v1/tokens",
        data={
            "key": "pk_test_suite",
            "card[number]": number,
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": "123",
        },
        timeout=5,
    )
    response.raise_for_status()
    return {**response.json(), "email": email}
