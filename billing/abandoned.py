"""Payments the customer left during 3-D Secure: canceled at Stripe once they are older than
`BILLING_ABANDONED_AFTER` seconds (default an hour), so they stop showing "waiting for your bank"
forever and the money can never be taken later by an authentication nobody is waiting for.

Run by the periodic job `cancel_abandoned_payments` (billing_periodic, docs/INSTALL.md
"Background work"). Each payment stands alone and the work is idempotent: the cancel carries an
idempotency key, and the payment moves through billing.fulfilment under its row lock, so two runs
at once, or a run racing the customer's late confirmation or the webhook, end in one state. A
customer who finished 3-D Secure just before the cancel is credited, not canceled: Stripe refuses
to cancel a succeeded intent, and the intent Stripe then shows is applied as it is.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing import fulfilment, stripe_gateway
from billing.conf import app_settings
from billing.exceptions import InvalidPaymentRequest, StripeUnavailable
from billing.models import Payment
from billing.stripe_gateway import IntentStatus

logger = logging.getLogger(__name__)

ABANDONED_MESSAGE = _("Canceled: the bank's check (3-D Secure) was not completed in time. Nothing was charged.")


def cancel_abandoned(*, now=None) -> dict[str, int]:
    """Cancel every payment still waiting for 3-D Secure past the limit. Returns counts of what
    happened: canceled, credited (finished after all), errors (left for the next run)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=int(app_settings.BILLING_ABANDONED_AFTER))
    waiting = Payment.objects.filter(
        status=Payment.Status.REQUIRES_ACTION, created_at__lt=cutoff, stripe_payment_intent_id__isnull=False
    ).select_related("pack", "user")
    counts = {"canceled": 0, "credited": 0, "errors": 0}
    for payment in waiting.order_by("created_at", "id").iterator():
        try:
            outcome = _cancel(payment)
        except Exception:  # one payment must not stop the others; it is tried again next run
            logger.exception("payment %s: could not cancel the abandoned 3-D Secure payment", payment.pk)
            counts["errors"] += 1
            continue
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _cancel(payment: Payment) -> str:
    try:
        intent = stripe_gateway.cancel_payment_intent(
            payment.stripe_payment_intent_id, idempotency_key=f"payment:{payment.reference}:cancel-abandoned"
        )
    except InvalidPaymentRequest:
        # Stripe will not cancel it (it succeeded, or is processing, at the last moment): take it as it is.
        intent = stripe_gateway.retrieve_payment_intent(payment.stripe_payment_intent_id)
    except StripeUnavailable:
        raise
    if intent.status == IntentStatus.CANCELED:
        fulfilment.fail_payment(payment, message=str(ABANDONED_MESSAGE), intent_id=intent.id)
        return "canceled"
    applied = fulfilment.apply_intent(payment, intent, source="abandoned")
    return "credited" if applied.outcome == fulfilment.Outcome.CREDIT else "unchanged"
