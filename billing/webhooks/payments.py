"""PaymentIntent events: a payment succeeded (credit it) or failed (say so).

The card charged is recorded with the credit: an event's intent names its latest charge by id
only, so when our payment does not know its card yet the charge is asked for (before the event's
transaction; its payment_method_details.card). A failed intent's last error carries the card.
"""

from __future__ import annotations

from billing import fulfilment
from billing.decline_messages import error_code
from billing.exceptions import PaymentMismatch
from billing.models import Payment
from billing.stripe_gateway import intent_card
from billing.webhooks.matching import charge_id, find_payment, stripe_id
from billing.webhooks.registry import Found, NotOurs, UnknownPayment, handles


def _succeeded_wants_card(intent: dict) -> str | None:
    if intent_card(intent)[1]:
        return None  # the event carries it (an expanded charge)
    try:
        payment, _ = _payment_for_intent(intent)
    except (NotOurs, UnknownPayment, PaymentMismatch):
        return None  # the handler says why; nothing to ask Stripe
    return None if payment.card_last4 else charge_id(intent.get("latest_charge"))


# The credit never waits for the card: Stripe unreachable, the payment is credited without it.
@handles("payment_intent.succeeded", wants_charge=_succeeded_wants_card, charge_optional=True)
def _intent_succeeded(intent: dict, found: Found) -> None:
    payment, intent_id = _payment_for_intent(intent)
    amount = intent.get("amount_received") or intent.get("amount")
    card = intent_card(intent)
    if not card[1] and found.charge is not None and found.charge.payment_intent == intent_id:
        card = (found.charge.card_brand, found.charge.card_last4)
    fulfilment.fulfil_payment(
        payment, intent_id=intent_id, amount=amount, currency=intent.get("currency"), source="webhook", card=card
    )


@handles("payment_intent.payment_failed")
def _intent_failed(intent: dict, found: Found) -> None:
    payment, intent_id = _payment_for_intent(intent)
    error = intent.get("last_payment_error")
    message = error.get("message") if isinstance(error, dict) else None
    fulfilment.fail_payment(
        payment,
        message=message if isinstance(message, str) else "",
        code=error_code(error),
        intent_id=intent_id,
        card=intent_card(intent),
    )


def _payment_for_intent(intent: dict) -> tuple[Payment, str]:
    intent_id = stripe_id(intent.get("id"))
    payment = find_payment(intent_id=intent_id, metadata=intent.get("metadata"))
    if intent_id is None:  # found by metadata alone: nothing to check the event against
        raise PaymentMismatch(
            f"payment {payment.pk}: the event names no PaymentIntent id", "This payment does not match our records."
        )
    return payment, intent_id
