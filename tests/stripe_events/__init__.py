"""Stripe webhook events for tests, as Stripe sends them.

One JSON file per event type, in the shape Stripe's API reference documents, stamped with the
API version billing pins (`stripe_gateway.STRIPE_API_VERSION`), re-pointed at one of our
payments; signed as Stripe signs them (HMAC-SHA256 of "<timestamp>.<raw body>" under the
endpoint secret, header "t=...,v1=...", see tests/stripe_helpers.py); POSTed through the Django
test client as a raw body, the way Stripe delivers them.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from billing.models import Payment
from tests.seed import starter_pack
from tests.stripe_helpers import stripe_signature

# `events.sign(body)` names the one signing helper where the event tests already call it.
sign = stripe_signature

HERE = Path(__file__).parent
WEBHOOK_URL = "/billing/webhook/"


def load(event_type: str) -> dict:
    """The stored example of `event_type`, with a fresh event id."""
    event = json.loads((HERE / f"{event_type}.json").read_text())
    event["id"] = f"evt_{uuid.uuid4().hex[:24]}"
    event["created"] = int(time.time())
    return event


def make_payment(user, *, status: str = Payment.Status.PENDING) -> Payment:
    """A payment as the charge flow leaves it after Stripe accepted the intent (not yet settled)."""
    pack = starter_pack()
    return Payment.objects.create(
        user=user,
        pack=pack,
        credits=pack.credits,
        amount=pack.amount,
        currency=pack.currency,
        status=status,
        stripe_payment_intent_id=f"pi_{uuid.uuid4().hex[:24]}",
    )


def charge_id(payment: Payment) -> str:
    return "ch_" + payment.stripe_payment_intent_id.removeprefix("pi_")


def _intent(event: dict, payment: Payment, *, with_metadata: bool) -> dict:
    intent = event["data"]["object"]
    intent["id"] = payment.stripe_payment_intent_id
    intent["client_secret"] = f"{intent['id']}_secret_{uuid.uuid4().hex}"
    intent["amount"] = payment.amount
    intent["currency"] = payment.currency
    intent["latest_charge"] = charge_id(payment)
    intent["metadata"] = (
        {"pack": payment.pack.slug, "payment_id": str(payment.pk), "user_id": str(payment.user_id)}
        if with_metadata
        else {}
    )
    return intent


def intent_succeeded(payment: Payment, *, amount: int | None = None, with_metadata: bool = True) -> dict:
    event = load("payment_intent.succeeded")
    intent = _intent(event, payment, with_metadata=with_metadata)
    if amount is not None:
        intent["amount"] = amount
    intent["amount_received"] = intent["amount"]
    return event


def intent_failed(payment: Payment, *, message: str = "Your card was declined.") -> dict:
    event = load("payment_intent.payment_failed")
    intent = _intent(event, payment, with_metadata=True)
    intent["last_payment_error"]["message"] = message
    intent["last_payment_error"]["charge"] = charge_id(payment)
    return event


def charge_refunded(payment: Payment, *, refunds: list, charge: str | None = None) -> dict:
    """charge.refunded after the refunds `refunds` (oldest first) were made on the payment's charge.

    Each refund is an amount (a refund that went through) or `(refund id, amount, status)`;
    Stripe's `amount_refunded` leaves out the failed and canceled ones.
    """
    refunds = [r if isinstance(r, tuple) else (f"re_{uuid.uuid4().hex[:24]}", r, "succeeded") for r in refunds]
    standing = [amount for _, amount, status in refunds if status not in ("failed", "canceled")]
    event = load("charge.refunded")
    obj = event["data"]["object"]
    template = obj["refunds"]["data"][0]
    obj.update(
        id=charge or charge_id(payment),
        amount=payment.amount,
        amount_captured=payment.amount,
        amount_refunded=sum(standing),
        currency=payment.currency,
        payment_intent=payment.stripe_payment_intent_id,
        refunded=sum(standing) >= payment.amount,
    )
    obj["refunds"].update(
        data=[
            {
                **template,
                "id": refund_id,
                "amount": amount,
                "charge": obj["id"],
                "currency": payment.currency,
                "payment_intent": payment.stripe_payment_intent_id,
                "status": status,
            }
            for refund_id, amount, status in reversed(refunds)  # Stripe lists the newest first
        ],
        total_count=len(refunds),
        url=f"/v1/charges/{obj['id']}/refunds",
    )
    event["data"]["previous_attributes"]["amount_refunded"] = sum(standing[:-1])
    return event


def dispute(
    payment: Payment,
    event_type: str = "charge.dispute.created",
    *,
    status: str | None = None,
    dispute_id: str | None = None,
    amount: int | None = None,
    charge: str | None = None,
) -> dict:
    """A charge.dispute.* event about the payment's charge (funds_withdrawn has created's shape)."""
    event = load(event_type if (HERE / f"{event_type}.json").exists() else "charge.dispute.created")
    event["type"] = event_type
    obj = event["data"]["object"]
    obj.update(
        id=dispute_id or f"dp_{uuid.uuid4().hex[:24]}",
        amount=payment.amount if amount is None else amount,
        charge=charge or charge_id(payment),
        currency=payment.currency,
        payment_intent=payment.stripe_payment_intent_id,
    )
    if status is not None:
        obj["status"] = status
    return event


def dispute_created(payment: Payment, *, amount: int | None = None) -> dict:
    return dispute(payment, "charge.dispute.created", amount=amount)


def refund_updated(
    payment: Payment, event_type: str = "refund.failed", *, refund_id: str, amount: int, charge: str, status="failed"
) -> dict:
    """A refund.failed, refund.updated or charge.refund.updated event for one refund of the payment's charge."""
    event = load(event_type if (HERE / f"{event_type}.json").exists() else "refund.failed")
    event["type"] = event_type
    event["data"]["object"].update(
        id=refund_id,
        amount=amount,
        charge=charge,
        currency=payment.currency,
        payment_intent=payment.stripe_payment_intent_id,
        status=status,
    )
    return event


def body_of(event: dict | bytes) -> bytes:
    return event if isinstance(event, bytes) else json.dumps(event).encode()


def post(client, event: dict | bytes, *, secret: str | None = None, timestamp: int | None = None, signature=None):
    """Deliver `event` (a dict, or raw bytes) signed with `secret` (default: the endpoint's)."""
    body = body_of(event)
    header = stripe_signature(body, secret, timestamp=timestamp) if signature is None else signature
    return client.post(WEBHOOK_URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)
