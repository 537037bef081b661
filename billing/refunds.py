"""Refunding a payment through Stripe, then clawing its credits back at once.

Stripe first, outside any transaction; then `fulfilment.record_refund` with the cumulative
amount Stripe reports refunded on the charge, so the credits come back in the same request. The
`charge.refunded` webhook that follows carries the same cumulative amount and changes nothing.

The Stripe idempotency key names the payment (by its reference, as the PaymentIntent's key does:
ids repeat across a reset database or two environments on one Stripe account) and the total ever
refunded before and after (`payment:<reference>:refund:<from>-<to>`, failed refunds included, so
a refund made after one failed never reuses the failed one's key): a double click or a
resubmitted admin action asks Stripe for the same refund twice and real Stripe makes it once.
Our own books cannot double-count either way, because `record_refund` settles from cumulative
totals, not from our request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import router
from django.utils import timezone
from django.utils.translation import gettext as _

from billing import fulfilment, stripe_gateway
from billing.exceptions import InvalidPaymentRequest, RefundError
from billing.ledger import grants
from billing.models import Payment, Profile
from billing.templatetags.billing_money import money
from billing.users import display_name

logger = logging.getLogger(__name__)

Status = Payment.Status


@dataclass(frozen=True)
class RefundPreview:
    """What refunding `amount` of a payment would do, by the rules `record_refund` settles with."""

    payment: Payment
    remaining: int  # minor units not yet refunded
    amount: int
    credits_clawed_back: int  # taken from the balance
    credits_short: int  # due back, but already spent: recorded as not recovered


def preview_refund(payment: Payment, amount: int | None = None) -> RefundPreview:
    """The refund `refund_payment` would make, without making it; RefundError when it would refuse.

    The balance read is the one the clawback draws from (holds do not protect credits from a
    refund; expired credits cannot be taken back), so the preview matches unless the customer
    spends or buys in between."""
    payment = Payment.objects.select_related("user", "pack").get(pk=payment.pk)
    _check_refundable(payment)
    remaining = payment.amount - payment.amount_refunded
    amount = remaining if amount is None else amount
    _check_amount(payment, amount, remaining)
    owed = payment.credits_clawed_back + payment.credits_unrecovered
    due = max(fulfilment.credits_taken_back(payment, amount_refunded=payment.amount_refunded + amount) - owed, 0)
    taken = min(due, _reclaimable_credits(payment.user))
    return RefundPreview(payment, remaining, amount, credits_clawed_back=taken, credits_short=due - taken)


def refund_payment(payment: Payment, *, actor, amount: int | None = None, staff_note: str = "") -> Payment:
    """Refund `amount` minor units (None: all that is left) of a succeeded payment; returns it updated.
    The clawback's ledger entry tells the customer which purchase was refunded; its staff note
    names the payment, the Stripe refund, `actor` and `staff_note` (staff only).

    Must not run inside a database transaction (it calls Stripe). Raises RefundError with a
    message fit for staff; `StripeUnavailable` when Stripe cannot be reached (the outcome is
    then unknown: the `charge.refunded` webhook settles it if the refund did happen).
    """
    payment = Payment.objects.select_related("user", "pack").get(pk=payment.pk)
    _check_refundable(payment)
    remaining = payment.amount - payment.amount_refunded
    if amount is None:
        amount = remaining
    _check_amount(payment, amount, remaining)
    ever_refunded = payment.amount_refunded + payment.amount_refund_failed
    refunded_after = ever_refunded + amount
    try:
        refund = stripe_gateway.create_refund(
            intent_id=payment.stripe_payment_intent_id,
            amount=amount,
            idempotency_key=f"payment:{payment.reference}:refund:{ever_refunded}-{refunded_after}",
        )
    except InvalidPaymentRequest as exc:
        raise RefundError(exc.description, f"Stripe refused the refund: {exc.user_message}") from exc
    if refund.status in stripe_gateway.REFUND_RETURNED:
        raise RefundError(
            f"payment {payment.pk}: Stripe refund {refund.id} is {refund.status}",
            f"Stripe reports the refund {refund.status}; nothing was clawed back.",
        )
    logger.info(
        "payment %s: refund %s of %s %s by %s (%s)",
        payment.pk,
        refund.id,
        amount,
        payment.currency,
        actor,
        refund.status,
    )
    # Both are at most everything ever refunded on the charge, which is what record_refund
    # takes: Stripe's figure also covers refunds made elsewhere (the dashboard), ours also
    # refunds that failed since (Stripe's figure drops them).
    total = max(refund.charge_amount_refunded or 0, refunded_after)
    note = f"refund {refund.id} by {display_name(actor)}" + (f": {staff_note.strip()}" if staff_note.strip() else "")
    return fulfilment.record_refund(payment, amount_refunded=total, staff_note=note)


def _check_refundable(payment: Payment) -> None:
    if payment.status == Status.REFUNDED:
        raise RefundError(
            f"payment {payment.pk} is already refunded", _("This payment has already been fully refunded.")
        )
    if payment.status == Status.DISPUTED:
        raise RefundError(
            f"payment {payment.pk} is disputed",
            _("This payment is disputed; the dispute, not a refund, returns the money."),
        )
    if payment.status != Status.SUCCEEDED or not payment.stripe_payment_intent_id:
        raise RefundError(
            f"payment {payment.pk} is {payment.status}, not succeeded",
            f"Only a succeeded payment can be refunded; this one is {payment.get_status_display().lower()}.",
        )


def _check_amount(payment: Payment, amount, remaining: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= remaining:
        raise RefundError(
            f"payment {payment.pk}: refund amount {amount!r} is not between 1 and the {remaining} left",
            f"The refund must be above zero and at most the {money(remaining, payment.currency)} not yet refunded.",
        )


def _reclaimable_credits(user) -> int:
    """The credits `ledger.claw_back_credits` could take now: the balance, holds included, less
    grants that have expired but are not swept yet."""
    alias = router.db_for_read(Profile)
    row = Profile.objects.using(alias).filter(user_id=user.pk).values_list("credits", "next_expiry").first()
    if row is None:
        return 0
    credits, next_expiry = row
    now = timezone.now()
    if next_expiry is not None and next_expiry <= now:
        credits -= grants.expired_remaining(alias, user_id=user.pk, now=now)
    return max(credits, 0)
