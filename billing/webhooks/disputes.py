"""Dispute events: Stripe took the money back (claw the credits back), or returned it after a
won dispute (give them back). Inquiries (`warning_*`) move no money and change nothing."""

from __future__ import annotations

from billing import fulfilment
from billing.models import Payment
from billing.webhooks.matching import charge_id, check_currency, find_payment, stripe_id
from billing.webhooks.registry import Found, NoEffect, NotOurs, handles

# Inquiries: the bank asks questions before any chargeback; no money moves.
INQUIRY = ("warning_needs_response", "warning_under_review", "warning_closed")


def _dispute_wants_charge(dispute: dict) -> str | None:
    # Disputes name their PaymentIntent, except on charges made without one (the Charges API):
    # only the charge can tell, and one that has none is not ours.
    if _is_inquiry(dispute) or _dispute_intent(dispute) is not None:
        return None
    return charge_id(dispute.get("charge"))


@handles("charge.dispute.created", "charge.dispute.funds_withdrawn", wants_charge=_dispute_wants_charge)
def _dispute_opened(dispute: dict, found: Found) -> None:
    """Stripe took the money back."""
    _refuse_inquiry(dispute)
    fulfilment.record_dispute(_payment_for_dispute(dispute, found), amount_disputed=dispute.get("amount"))


@handles("charge.dispute.closed", wants_charge=_dispute_wants_charge)
def _dispute_closed(dispute: dict, found: Found) -> None:
    """Won: Stripe returns the money, and the credits come back. Lost: the money stays withdrawn,
    which the clawback already reflects (applied here too, should the opening event be missing)."""
    _refuse_inquiry(dispute)
    payment = _payment_for_dispute(dispute, found)
    if dispute.get("status") == "won":
        fulfilment.record_dispute_reinstated(payment, amount_disputed=dispute.get("amount"))
    else:
        fulfilment.record_dispute(payment, amount_disputed=dispute.get("amount"))


@handles("charge.dispute.funds_reinstated", wants_charge=_dispute_wants_charge)
def _dispute_funds_reinstated(dispute: dict, found: Found) -> None:
    _refuse_inquiry(dispute)
    fulfilment.record_dispute_reinstated(_payment_for_dispute(dispute, found), amount_disputed=dispute.get("amount"))


def _is_inquiry(dispute: dict) -> bool:
    return dispute.get("status") in INQUIRY


def _refuse_inquiry(dispute: dict) -> None:
    if _is_inquiry(dispute):
        # Nothing was withdrawn, so nothing is clawed back, and staff may still refund.
        raise NoEffect(f"dispute {dispute.get('id')} is an inquiry ({dispute.get('status')}): no money moved")


def _dispute_intent(dispute: dict) -> str | None:
    intent_id = stripe_id(dispute.get("payment_intent"))
    charge = dispute.get("charge")
    if intent_id is None and isinstance(charge, dict):
        intent_id = stripe_id(charge.get("payment_intent"))
    return intent_id


def _payment_for_dispute(dispute: dict, found: Found) -> Payment:
    intent_id = _dispute_intent(dispute)
    if intent_id is None:
        if found.charge is None:
            raise NotOurs(found.missing or f"dispute {dispute.get('id')} names no PaymentIntent and no charge")
        intent_id = found.charge.payment_intent
        if intent_id is None:
            raise NotOurs(
                f"dispute {dispute.get('id')} is on charge {found.charge.id}, made without a PaymentIntent "
                "(not created by this site)"
            )
    payment = find_payment(intent_id=intent_id, metadata=dispute.get("metadata"))
    check_currency(payment, dispute.get("currency"))
    return payment
