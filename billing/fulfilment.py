"""What happens to a Payment once Stripe has spoken: fulfil, fail, or claw back (refund, dispute).

One module, used by the charge and confirm views, the webhook and `reconcile_payments`, so that
whichever path arrives first, however often, concurrently or out of order, a payment is credited
exactly once and only when Stripe says it succeeded. Each function:

- runs in one transaction that starts by locking the payment row (`select_for_update`), so two
  paths acting on the same payment take turns and the second sees what the first did;
- is idempotent: it moves the payment towards a state computed from Stripe's facts, and doing
  that twice changes nothing the second time;
- is backed by the database: one purchase ledger entry per payment (a unique constraint), and
  clawbacks keyed by the cumulative amount they settle.

None of them calls Stripe: callers fetch or receive Stripe's facts first, outside any transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils.translation import gettext as _

from billing import ledger, signals
from billing.exceptions import BillingError
from billing.models import LedgerEntry, Payment

logger = logging.getLogger(__name__)

Status = Payment.Status
CREDITED = (Status.SUCCEEDED, Status.REFUNDED, Status.DISPUTED)
OPEN = (Status.PENDING, Status.REQUIRES_ACTION, Status.FAILED)


class PaymentMismatch(BillingError):
    """Stripe's facts do not match the payment (another intent, amount or currency): never credit."""


@dataclass(frozen=True)
class Fulfilment:
    payment: Payment
    entry: LedgerEntry
    newly_credited: bool  # False when an earlier path had already credited it


def purchase_key(payment: Payment) -> str:
    return f"payment:{payment.pk}:purchase"


@transaction.atomic
def fulfil_payment(payment: Payment, *, intent_id: str, amount: int, currency: str, source: str) -> Fulfilment:
    """Credit a payment whose PaymentIntent Stripe reports as succeeded. Exactly once per payment."""
    payment = _lock(payment)
    _check_facts(payment, intent_id=intent_id, amount=amount, currency=currency)
    if payment.stripe_payment_intent_id is None:
        payment.stripe_payment_intent_id = intent_id
    if payment.status in CREDITED:
        entry = LedgerEntry.objects.get(payment=payment, kind=LedgerEntry.Kind.PURCHASE)
        return Fulfilment(payment, entry, newly_credited=False)
    payment.status = Status.SUCCEEDED
    payment.failure_message = ""
    payment.save(update_fields=["stripe_payment_intent_id", "status", "failure_message", "updated_at"])
    entry = ledger.add_credits(
        payment.user,
        payment.credits,
        kind=LedgerEntry.Kind.PURCHASE,
        reason=f"Bought {payment.pack.name} ({payment.credits} credits)",
        payment=payment,
        idempotency_key=purchase_key(payment),
    )
    logger.info("payment %s credited %s via %s", payment.pk, payment.credits, source)
    signals.send_after_commit(
        signals.credits_purchased,
        sender=Payment,
        payment=payment,
        user=payment.user,
        entry=entry,
        credits=payment.credits,
    )
    # A refund or dispute that arrived before the success is settled now.
    _settle_clawback(payment)
    return Fulfilment(payment, entry, newly_credited=True)


@transaction.atomic
def mark_requires_action(payment: Payment, *, intent_id: str) -> Payment:
    """The card needs 3-D Secure: remember the intent and wait for the customer."""
    payment = _lock(payment)
    _attach_intent(payment, intent_id)
    if payment.status == Status.PENDING:
        payment.status = Status.REQUIRES_ACTION
    payment.save(update_fields=["stripe_payment_intent_id", "status", "updated_at"])
    return payment


@transaction.atomic
def attach_intent(payment: Payment, *, intent_id: str) -> Payment:
    """Record which PaymentIntent belongs to the payment (before its outcome is known)."""
    payment = _lock(payment)
    _attach_intent(payment, intent_id)
    payment.save(update_fields=["stripe_payment_intent_id", "updated_at"])
    return payment


@transaction.atomic
def fail_payment(payment: Payment, *, message: str, intent_id: str | None = None) -> Payment:
    """Stripe refused the payment. A credited payment is never un-credited by a late failure."""
    payment = _lock(payment)
    if intent_id:
        _attach_intent(payment, intent_id)
    if payment.status in (Status.PENDING, Status.REQUIRES_ACTION):
        payment.status = Status.FAILED
        payment.failure_message = (message or "The payment failed.")[:500]
    payment.save(update_fields=["stripe_payment_intent_id", "status", "failure_message", "updated_at"])
    return payment


@transaction.atomic
def record_refund(payment: Payment, *, amount_refunded: int) -> Payment:
    """Stripe says `amount_refunded` (cumulative, minor units) of the payment was refunded.

    Claws back the proportional credits once (repeats and stale events change nothing; a
    refund seen before the success is settled when the payment is credited).
    """
    return _record_taken_back(payment, "amount_refunded", amount_refunded)


@transaction.atomic
def record_dispute(payment: Payment, *, amount_disputed: int) -> Payment:
    """The customer disputed `amount_disputed` of the payment: claw back and flag it for staff."""
    return _record_taken_back(payment, "amount_disputed", amount_disputed)


# --- internals ------------------------------------------------------------------------------


def _lock(payment: Payment) -> Payment:
    # of=("self",): FOR UPDATE over the join would also lock the pack and user rows, queueing
    # every purchase of the same pack behind this one (PostgreSQL; SQLite has no row locks).
    return Payment.objects.select_for_update(of=("self",)).select_related("pack", "user").get(pk=payment.pk)


def _attach_intent(payment: Payment, intent_id: str) -> None:
    if payment.stripe_payment_intent_id is None:
        payment.stripe_payment_intent_id = intent_id
    elif payment.stripe_payment_intent_id != intent_id:
        raise PaymentMismatch(
            f"payment {payment.pk} belongs to {payment.stripe_payment_intent_id}, not {intent_id}",
            _("This payment does not match our records."),
        )


def _check_facts(payment: Payment, *, intent_id: str, amount: int, currency: str) -> None:
    _attach_intent(payment, intent_id)
    # Strict types: a signed event is Stripe's, but a float 500.0 or a list must never pass as facts.
    amount_ok = isinstance(amount, int) and not isinstance(amount, bool) and amount == payment.amount
    if not amount_ok or not isinstance(currency, str) or currency.lower() != payment.currency:
        raise PaymentMismatch(
            f"payment {payment.pk} is for {payment.amount} {payment.currency}, "
            f"Stripe reports {amount} {currency} on {intent_id}",
            _("This payment does not match our records."),
        )


def _check_amount(payment: Payment, amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= payment.amount:
        raise PaymentMismatch(
            f"payment {payment.pk} of {payment.amount}: refund/dispute amount {amount!r} is out of range",
            _("This payment does not match our records."),
        )


def _record_taken_back(payment: Payment, field: str, amount: int) -> Payment:
    """Raise the cumulative refunded or disputed amount to `amount` (never lower it: a stale
    event carries a smaller total), then settle the clawback. Runs in the caller's transaction."""
    payment = _lock(payment)
    _check_amount(payment, amount)
    previous = getattr(payment, field)
    if amount > previous:
        setattr(payment, field, amount)
        payment.save(update_fields=[field, "updated_at"])
    _settle_clawback(payment)
    if amount > previous and field == "amount_refunded":
        signals.send_after_commit(
            signals.payment_refunded,
            sender=Payment,
            payment=payment,
            user=payment.user,
            amount_refunded=amount,
            amount=amount - previous,
            credits_clawed_back=payment.credits_clawed_back,
        )
    elif amount > previous:
        signals.send_after_commit(
            signals.payment_disputed, sender=Payment, payment=payment, user=payment.user, amount_disputed=amount
        )
    return payment


def _settle_clawback(payment: Payment) -> None:
    """Bring the credits taken back in line with what was refunded or disputed (payment locked).

    Credits due back = credits * min(amount, refunded + disputed) // amount, rounded down in the
    customer's favour; a full refund takes back every credit. What the balance cannot cover
    (already spent) is recorded as `credits_unrecovered` for staff, never taken below zero.
    """
    if payment.status not in CREDITED:
        return  # nothing was credited yet; fulfil_payment settles this when it credits
    before = (payment.credits_clawed_back, payment.credits_unrecovered, payment.status)
    taken_amount = min(payment.amount, payment.amount_refunded + payment.amount_disputed)
    target = payment.credits * taken_amount // payment.amount
    due = target - payment.credits_clawed_back - payment.credits_unrecovered
    if due > 0:
        disputed = payment.amount_disputed > 0
        entry, shortfall = ledger.claw_back_credits(
            payment.user,
            due,
            kind=LedgerEntry.Kind.DISPUTE if disputed else LedgerEntry.Kind.REFUND,
            reason=f"{'Disputed' if disputed else 'Refunded'} payment {payment.pk}",
            payment=payment,
            idempotency_key=f"payment:{payment.pk}:clawback:{target}",
        )
        payment.credits_clawed_back += due - shortfall
        payment.credits_unrecovered += shortfall
        if shortfall:
            logger.warning("payment %s: %s credits could not be clawed back (spent)", payment.pk, shortfall)
            signals.send_after_commit(
                signals.clawback_shortfall,
                sender=Payment,
                payment=payment,
                user=payment.user,
                shortfall=shortfall,
                credits_unrecovered=payment.credits_unrecovered,
            )
    if payment.amount_disputed:
        payment.status = Status.DISPUTED
    elif payment.amount_refunded >= payment.amount:
        payment.status = Status.REFUNDED
    if (payment.credits_clawed_back, payment.credits_unrecovered, payment.status) != before:
        payment.save(update_fields=["credits_clawed_back", "credits_unrecovered", "status", "updated_at"])
