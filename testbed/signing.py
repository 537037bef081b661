"""Webhook deliveries signed as Stripe signs them, for the bench and the reliability servers."""

from __future__ import annotations

import hashlib
import hmac
import time


def stripe_signature(payload: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The Stripe-Signature header value: HMAC-SHA256 of "<timestamp>.<raw body>" under the
    endpoint secret, as "t=...,v1=..." (Stripe accepts timestamps up to 300 s old)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
