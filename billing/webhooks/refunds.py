"""Refund events: a charge was refunded (claw the credits back), or a refund failed or was
canceled (the money came back to us, so the credits its clawback took come back too).

Every refund figure is cumulative over all of the charge's refunds, so a repeat or a stale
event changes nothing.
"""

from __future__ import annotations

from billing import fulfilment, stripe_gateway
from billing.exceptions import PaymentMismatch
from billing.stripe_gateway import REFUND_RETURNED
from billing.webhooks.matching import charge_id, check_currency, find_payment, is_amount, stripe_id
from billing.webhooks.registry import Found, NoEffect, NotOurs, handles


def _refunded_charge_wants_refunds(charge: dict) -> str | None:
    # Since API version 2022-11-15 a charge no longer lists its refunds; without the list a
    # failed refund cannot be told from one still standing.
    if stripe_id(charge.get("payment_intent")) is None or _listed_refunds(charge) is not None:
        return None
    return charge_id(charge.get("id"))


def _failed_refund_wants_charge(refund: dict) -> str | None:
    return charge_id(refund.get("charge")) if refund.get("status") in REFUND_RETURNED else None


@handles("charge.refunded", wants_charge=_refunded_charge_wants_refunds)
def _charge_refunded(charge: dict, found: Found) -> None:
    intent_id = stripe_id(charge.get("payment_intent"))
    if intent_id is None:
        raise NotOurs(
            f"charge {stripe_id(charge.get('id'))} was not made through a PaymentIntent (not created by this site)"
        )
    payment = find_payment(intent_id=intent_id, metadata=charge.get("metadata"))
    check_currency(payment, charge.get("currency"))
    refunds = _listed_refunds(charge)
    if refunds is None and found.charge is not None:
        refunds = _refunds_of(found.charge)
    if refunds is None:  # Stripe does not show the charge: its cumulative figure is a safe lower bound
        fulfilment.record_refund(payment, amount_refunded=charge.get("amount_refunded"))
        return
    fulfilment.record_refund(payment, **_refund_totals(refunds))


@handles("charge.refund.updated", "refund.updated", "refund.failed", wants_charge=_failed_refund_wants_charge)
def _refund_updated(refund: dict, found: Found) -> None:
    """A refund that failed or was canceled returns the money to us, so the credits its
    clawback took come back."""
    refund_id, status, amount = refund.get("id"), refund.get("status"), refund.get("amount")
    if status not in REFUND_RETURNED:
        raise NoEffect(f"refund {refund_id} is {status}: only a failed or canceled refund changes the credits")
    if found.charge is None:
        raise NotOurs(found.missing or f"refund {refund_id} names no charge")
    intent_id = stripe_id(refund.get("payment_intent")) or found.charge.payment_intent
    if intent_id is None:
        raise NotOurs(f"charge {found.charge.id} was not made through a PaymentIntent (not created by this site)")
    payment = find_payment(intent_id=intent_id, metadata=refund.get("metadata"))
    check_currency(payment, refund.get("currency"))
    refunds = _refunds_of(found.charge)
    if not isinstance(refund_id, str) or not is_amount(amount):
        raise PaymentMismatch(
            f"payment {payment.pk}: refund {refund_id!r} of {amount!r} is not a refund", "This refund is malformed."
        )
    refunds[refund_id] = (amount, status)  # the event's own word: a failed refund stays failed
    fulfilment.record_refund(payment, **_refund_totals(refunds))


def _listed_refunds(charge: dict) -> dict[str, tuple[int, str]] | None:
    """The charge's refunds (id -> amount, status) when the charge lists all of them, else None."""
    listing = charge.get("refunds")
    if not isinstance(listing, dict) or listing.get("has_more") is not False:
        return None
    items = listing.get("data")
    if not isinstance(items, list):
        return None
    refunds = {}
    for item in items:
        if not isinstance(item, dict):
            return None
        refund_id, amount, status = item.get("id"), item.get("amount"), item.get("status")
        if not (isinstance(refund_id, str) and is_amount(amount) and isinstance(status, str)):
            return None
        refunds[refund_id] = (amount, status)
    return refunds


def _refunds_of(charge: stripe_gateway.Charge) -> dict[str, tuple[int, str]]:
    return {refund.id: (refund.amount, refund.status) for refund in charge.refunds}


def _refund_totals(refunds: dict[str, tuple[int, str]]) -> dict[str, int]:
    """Every refund ever made on the charge, and those of them that failed or were canceled."""
    return {
        "amount_refunded": sum(amount for amount, _ in refunds.values()),
        "amount_failed": sum(amount for amount, status in refunds.values() if status in REFUND_RETURNED),
    }
