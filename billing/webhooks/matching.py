"""Finding our payment behind an event, and reading Stripe's references, for every handler.

An event about a payment this site did not make is `NotOurs` (ignored); one whose metadata
names a payment this database lacks is `UnknownPayment`, and one that contradicts what we
recorded is `PaymentMismatch` (both failed: ours, but not applicable, which staff
must see).
"""

from __future__ import annotations

import re

from billing.exceptions import PaymentMismatch
from billing.models import Payment
from billing.webhooks.registry import NotOurs, UnknownPayment


def find_payment(*, intent_id: str | None, metadata) -> Payment:
    """Our payment, by the id we put in the PaymentIntent's metadata, else by the intent id."""
    payment_id = _int_or_none(metadata.get("payment_id") if isinstance(metadata, dict) else None)
    payment = None
    if payment_id is not None:
        payment = _payments().filter(pk=payment_id).first()
        reference = metadata.get("payment_ref")
        if payment is not None and isinstance(reference, str) and reference != payment.reference:
            # Same payment id, another installation (a second environment on this Stripe
            # account, or a database reset): Stripe sends every endpoint every event.
            raise NotOurs(f"PaymentIntent {intent_id} is for payment {reference} of another installation")
    if payment is None and intent_id:
        payment = _payments().filter(stripe_payment_intent_id=intent_id).first()
    if payment is None:
        if payment_id is not None:
            raise UnknownPayment(f"metadata names payment {payment_id}, which is not in this database ({intent_id})")
        raise NotOurs(f"no payment for PaymentIntent {intent_id} (not created by this site)")
    if intent_id and payment.stripe_payment_intent_id and payment.stripe_payment_intent_id != intent_id:
        raise PaymentMismatch(
            f"payment {payment.pk} belongs to {payment.stripe_payment_intent_id}, the event names {intent_id}",
            "This payment does not match our records.",
        )
    _check_user(payment, metadata, intent_id)
    return payment


def _payments():
    # With what every handler reads of it (the pack names the ledger entry, the user the signals):
    # one query, not three.
    return Payment.objects.select_related("pack", "user")


def _check_user(payment: Payment, metadata, intent_id: str | None) -> None:
    """Our PaymentIntents carry the payment's user in `metadata.user_id` (reconcile checks it
    too). An event naming another user never credits, fails or claws back this payment.

    When the intent is the one we stored for this payment, our own records contradict Stripe's:
    the event fails (500), so staff see it and nothing moves. Otherwise the intent is not ours
    for this payment: payment ids repeat across installations sharing a Stripe account (a
    second environment, a reset database), and intents older than `payment_ref` carry only the
    id and the user, so it is ignored, and Stripe stops resending an event we must never apply.
    """
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if user_id is None or user_id == str(payment.user_id):
        return
    if intent_id is not None and intent_id == payment.stripe_payment_intent_id:
        raise PaymentMismatch(
            f"payment {payment.pk} is user {payment.user_id}'s, its intent {intent_id} names user {user_id!r}",
            "This payment does not match our records.",
        )
    raise NotOurs(f"PaymentIntent {intent_id} names user {user_id!r}, payment {payment.pk} is another user's")


def check_currency(payment: Payment, currency) -> None:
    if not isinstance(currency, str) or currency.lower() != payment.currency:
        raise PaymentMismatch(
            f"payment {payment.pk} is in {payment.currency}, the event is in {currency!r}",
            "This payment does not match our records.",
        )


def stripe_id(value) -> str | None:
    """A Stripe reference, whether it came as an id or as an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def charge_id(value) -> str | None:
    """A charge id worth asking Stripe about (charges are ch_..., some payment methods' py_...)."""
    value = stripe_id(value)
    return value if value is not None and _CHARGE_ID.fullmatch(value) else None


_CHARGE_ID = re.compile(r"(ch|py)_[A-Za-z0-9]{1,250}")


def is_amount(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _int_or_none(value) -> int | None:
    """A positive database id, or None (metadata values are strings, and may be anything)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        return None
    return number if 0 < number < 2**63 else None
