"""PaymentIntent events: a payment succeeded (credit it) or failed (say so).

The card charged is recorded with the credit when the event carries it. An event's intent names
its latest charge by id only, so a payment credited here may not know its card: the receipt's task
asks Stripe for it later (billing.notices.learn_card), so crediting never waits for Stripe. A
failed intent's last error carries the card.
"""

from __future__ import annotations

from billing import fulfilment
from billing.decline_messages import error_code
from billing.exceptions import PaymentMismatch
from billing.models import Payment
from billing.stripe_gateway import intent_card
from billing.webhooks.matching import find_payment, stripe_id
from billing.webhooks.registry import Found, handles


@handles("payment_intent.succeeded")
def _intent_succeeded(intent: dict, found: Found) -> None:
    payment, intent_id = _payment_for_intent(intent)
    amount = intent.get("amount_received") or intent.get("amount")
    card = intent_card(intent)  # when the event carries it (an expanded charge); else the receipt asks
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
