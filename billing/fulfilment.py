"""What happens to a Payment once Stripe has spoken: fulfil, fail, or claw back (refund, dispute).

One module, used by the charge and confirm views, the webhook and `reconcile_payments`, so that
whichever path arrives first, however often, concurrently or out of order, a payment is credited
exactly once and only when Stripe says it succeeded. Each function:

- runs in one transaction that starts by locking the payment row (`select_for_update`), so two
  paths acting on the same payment take turns and the second sees what the first did; the
  common credit (an open payment, nothing refunded or disputed) is instead one statement whose
  conditional UPDATE of the payment takes that lock and decides (`billing.ledger.credit_purchase`);
- is idempotent: it moves the payment towards a state computed from Stripe's facts, and doing
  that twice changes nothing the second time;
- is backed by the database: one purchase ledger entry per payment (a unique constraint), and
  clawbacks and reinstatements keyed by the stretch of the payment's running totals they cover.

None of them calls Stripe: callers fetch or receive Stripe's facts first, outside any transaction.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from billing import ledger, signals
from billing.conf import app_settings
from billing.exceptions import CreditingRefused, PaymentMismatch
from billing.models import LedgerEntry, Payment, PaymentNotice
from billing.stripe_gateway import Intent, IntentStatus

logger = logging.getLogger(__name__)

Status = Payment.Status
CREDITED = (Status.SUCCEEDED, Status.REFUNDED, Status.DISPUTED)
OPEN = (Status.PENDING, Status.REQUIRES_ACTION, Status.FAILED)
MAX_REFUNDED = 2**31 - 1  # the largest amount the payment's integer columns hold


@dataclass(frozen=True)
class Fulfilment:
    payment: Payment
    entry: LedgerEntry
    newly_credited: bool  # False when an earlier path had already credited it
    available: int | None = None  # the spendable balance right after crediting, when known


class Outcome(StrEnum):
    """What a PaymentIntent's status means for our payment."""

    CREDIT = "credit"  # Stripe took the money
    FAIL = "fail"  # the attempt failed or was canceled: nothing was taken
    AWAIT_ACTION = "await_action"  # the customer must authenticate (3-D Secure)
    ATTACH = "attach"  # Stripe has not decided yet: remember the intent, wait for its webhook


# The one reading of Stripe's intent statuses (IntentStatus); any status Stripe adds later is
# taken as "not decided yet", the only reading that can neither credit nor fail wrongly.
OUTCOMES = {
    IntentStatus.SUCCEEDED: Outcome.CREDIT,
    IntentStatus.REQUIRES_PAYMENT_METHOD: Outcome.FAIL,
    IntentStatus.CANCELED: Outcome.FAIL,
    IntentStatus.REQUIRES_ACTION: Outcome.AWAIT_ACTION,
}


def outcome_of(intent: Intent) -> Outcome:
    return OUTCOMES.get(intent.status, Outcome.ATTACH)


@dataclass(frozen=True)
class Applied:
    payment: Payment
    outcome: Outcome
    newly_credited: bool = False  # this call credited the payment (not an earlier path)
    available: int | None = None  # the spendable balance right after crediting, when known


def apply_intent(payment: Payment, intent: Intent, *, source: str) -> Applied:
    """Move `payment` to where `intent`, fresh from Stripe, says it is: credit, fail, wait for
    3-D Secure, or only remember the intent. The one place that acts on an intent's status, used
    by the charge and confirm views and reconcile_payments; idempotent and safe to run
    concurrently with the webhook (each step locks the payment and moves it towards the state
    Stripe's facts imply)."""
    outcome = outcome_of(intent)
    if outcome == Outcome.CREDIT:
        done = fulfil_payment(
            payment,
            intent_id=intent.id,
            amount=intent.amount,
            currency=intent.currency,
            source=source,
            card=(intent.card_brand, intent.card_last4),
        )
        return Applied(done.payment, outcome, newly_credited=done.newly_credited, available=done.available)
    if outcome == Outcome.FAIL:
        code = intent.error_code or ("canceled" if intent.status == IntentStatus.CANCELED else "")
        failed = fail_payment(
            payment,
            message=failure_message(intent),
            code=code,
            intent_id=intent.id,
            card=(intent.card_brand, intent.card_last4),
        )
        return Applied(failed, outcome)
    if outcome == Outcome.AWAIT_ACTION:
        return Applied(mark_requires_action(payment, intent_id=intent.id), outcome)
    return Applied(attach_intent(payment, intent_id=intent.id), outcome)


def failure_message(intent: Intent) -> str:
    """Why a failed intent failed, in Stripe's words when it gives them."""
    if intent.error_message:
        return intent.error_message
    if intent.status == IntentStatus.CANCELED:
        return _("The payment was canceled.")
    return _("The payment failed.")


def purchase_key(payment: Payment) -> str:
    return f"payment:{payment.pk}:purchase"


def fulfil_payment(
    payment: Payment, *, intent_id: str, amount: int, currency: str, source: str, card: tuple[str, str] = ("", "")
) -> Fulfilment:
    """Credit a payment whose PaymentIntent Stripe reports as succeeded. Exactly once per payment.
    `card` is (brand, last4) of the card Stripe charged, recorded on the payment when known; the
    payment's receipt email is queued with the credit (billing.notices, BILLING_RECEIPT_EMAILS).

    Raises CreditingRefused, after flagging the payment for staff, when the ledger refuses the
    credits (nothing is lost: Stripe's success is re-applied by the webhook retry or reconcile
    once staff have fixed the cause).
    """
    try:
        done = _fulfil_open(payment, intent_id=intent_id, amount=amount, currency=currency, source=source, card=card)
        return done or _fulfil(payment, intent_id=intent_id, amount=amount, currency=currency, source=source, card=card)
    except ValueError as exc:  # the ledger's refusal (a limit, or the database's integer range)
        why = f"Stripe took the money ({intent_id}) but the credits could not be added: {exc}"
        logger.error("payment %s: %s", payment.pk, why)
        # Committed at once outside a caller's transaction; inside one (the webhook's), the
        # caller records it with its failure (flag_for_attention).
        flag_for_attention(payment.pk, why)
        raise CreditingRefused(f"payment {payment.pk}: {why}", payment_id=payment.pk, why=why) from exc


def flag_for_attention(payment_id: int, why: str) -> None:
    """Mark a payment for staff: Stripe took the money but the credits could not be added."""
    Payment.objects.filter(pk=payment_id).update(needs_attention=why[:500])


def _fulfil_open(
    payment: Payment, *, intent_id: str, amount: int, currency: str, source: str, card: tuple[str, str]
) -> Fulfilment | None:
    """The common case, an open payment nothing was refunded or disputed of, credited without
    the lock: the payment's conditional UPDATE to succeeded and the credit in one statement
    (billing.ledger.credit_purchase), whose UPDATE takes the payment's row lock and decides, so
    a path that got there first makes it change nothing. None when it did not apply: `_fulfil`
    then settles the payment under its lock (already credited, a mismatch, a refund or dispute
    seen first, no profile yet). The card charged and the receipt owed (billing.notices) ride in
    the same statement."""
    if payment.status not in OPEN or not _facts_match(payment, amount=amount, currency=currency):
        return None
    # The caller's instance stays as it was, as with the locking path's fresh copy of the row.
    payment = copy.copy(payment)
    try:
        done = ledger.credit_purchase(
            payment,
            intent_id=intent_id,
            open_statuses=OPEN,
            reason=_purchase_reason(payment),
            idempotency_key=purchase_key(payment),
            expires_at=_expiry(payment),
            card=card if card[1] else None,
            receipt_amount=payment.amount if app_settings.BILLING_RECEIPT_EMAILS else None,
        )
    except IntegrityError:
        return None  # nothing changed (e.g. another payment holds the intent): the locking path says why
    if done is None:
        return None
    _credited(payment, done.entry, source)
    return Fulfilment(payment, done.entry, newly_credited=True, available=done.available)


@transaction.atomic
def _fulfil(
    payment: Payment, *, intent_id: str, amount: int, currency: str, source: str, card: tuple[str, str]
) -> Fulfilment:
    payment = _lock(payment)
    _check_facts(payment, intent_id=intent_id, amount=amount, currency=currency)
    if payment.stripe_payment_intent_id is None:
        payment.stripe_payment_intent_id = intent_id
    if payment.status in CREDITED:
        if _record_card(payment, card, replace=False):  # credited by a path that did not know the card
            payment.save(update_fields=["card_brand", "card_last4", "updated_at"])
        entry = LedgerEntry.objects.get(payment=payment, kind=LedgerEntry.Kind.PURCHASE)
        return Fulfilment(payment, entry, newly_credited=False)
    _record_card(payment, card, replace=True)  # the card of the charge that succeeded
    payment.status = Status.SUCCEEDED
    payment.failure_message = ""
    payment.failure_code = ""
    payment.needs_attention = ""
    payment.save(
        update_fields=[
            "stripe_payment_intent_id",
            "status",
            "failure_message",
            "failure_code",
            "needs_attention",
            "card_brand",
            "card_last4",
            "updated_at",
        ]
    )
    entry = ledger.add_credits(
        payment.user,
        payment.credits,
        kind=LedgerEntry.Kind.PURCHASE,
        reason=_purchase_reason(payment),
        payment=payment,
        idempotency_key=purchase_key(payment),
        expires_at=_expiry(payment),
    )
    _credited(payment, entry, source)
    _queue_notice(payment, PaymentNotice.Kind.RECEIPT, amount=payment.amount)
    # A refund or dispute that arrived before the success is settled now.
    _settle_clawback(payment)
    return Fulfilment(payment, entry, newly_credited=True)


def _purchase_reason(payment: Payment) -> str:
    if payment.purpose == Payment.Purpose.AUTO_RECHARGE:
        return f"Auto-recharge: bought {payment.pack.name} ({payment.credits} credits)"
    return f"Bought {payment.pack.name} ({payment.credits} credits)"


def _expiry(payment: Payment):
    # Valid from the moment they are credited, for the days the pack promised when bought.
    return timezone.now() + timedelta(days=payment.validity_days) if payment.validity_days else None


def _credited(payment: Payment, entry: LedgerEntry, source: str) -> None:
    logger.info("payment %s credited %s via %s", payment.pk, payment.credits, source)
    signals.send_after_commit(
        signals.credits_purchased,
        sender=Payment,
        payment=payment,
        user=payment.user,
        entry=entry,
        credits=payment.credits,
    )


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
def fail_payment(
    payment: Payment,
    *,
    message: str,
    code: str | None = "",
    intent_id: str | None = None,
    card: tuple[str, str] = ("", ""),
) -> Payment:
    """Stripe refused the payment. A credited payment is never un-credited by a late failure.
    `message` is Stripe's, for staff; `code` names the customer's sentence (billing.decline_messages);
    `card` (brand, last4) the card refused, when Stripe names it."""
    payment = _lock(payment)
    if intent_id:
        _attach_intent(payment, intent_id)
    if payment.status in (Status.PENDING, Status.REQUIRES_ACTION):
        payment.status = Status.FAILED
        payment.failure_message = (message or "The payment failed.")[:500]
        payment.failure_code = (code or "")[:100]
        _record_card(payment, card, replace=True)
    payment.save(
        update_fields=[
            "stripe_payment_intent_id",
            "status",
            "failure_message",
            "failure_code",
            "card_brand",
            "card_last4",
            "updated_at",
        ]
    )
    return payment


@transaction.atomic
def record_refund(payment: Payment, *, amount_refunded: int, amount_failed: int = 0, staff_note: str = "") -> Payment:
    """Stripe says `amount_refunded` (minor units) was refunded on the payment's charge in all,
    counting refunds that later failed or were canceled, and `amount_failed` of it came back.

    Both are cumulative facts that only grow (a failed refund stays failed), so either may be a
    figure from an older event: the larger of what we hold and what we are told wins, and a
    repeat or a stale event changes nothing. Stripe's own `charge.amount_refunded` counts only
    refunds that have not failed; passed alone (`amount_failed=0`) it is a lower bound, which is
    safe. What is refunded now is the difference; the credits follow it, both ways: a refund
    claws back, and a refund that fails gives back what it took (a refund seen before the
    success is settled when the payment is credited). `staff_note` (who refunded, why) goes with the
    payment's ids into the clawback entry's note for staff.
    """
    payment = _lock(payment)
    # In all, refunds may exceed the price: what failed can be refunded again.
    _check_amount(payment, amount_refunded, upper=MAX_REFUNDED)
    _check_amount(payment, amount_failed, upper=amount_refunded)
    total = max(payment.amount_refunded + payment.amount_refund_failed, amount_refunded)
    failed = max(payment.amount_refund_failed, amount_failed)
    _check_amount(payment, total - failed)
    previous = payment.amount_refunded
    if (total - failed, failed) != (payment.amount_refunded, payment.amount_refund_failed):
        payment.amount_refunded, payment.amount_refund_failed = total - failed, failed
        payment.save(update_fields=["amount_refunded", "amount_refund_failed", "updated_at"])
    _settle_clawback(payment, why="refund failed", staff_note=staff_note)
    if payment.amount_refunded > previous:
        # One notice per refund, named by the running total ever refunded (failed refunds count,
        # so it only grows): a repeat or stale event finds it made, a later refund is a new one.
        _queue_notice(
            payment,
            PaymentNotice.Kind.REFUND,
            amount=payment.amount_refunded - previous,
            refunded_through=payment.amount_refunded + payment.amount_refund_failed,
        )
        signals.send_after_commit(
            signals.payment_refunded,
            sender=Payment,
            payment=payment,
            user=payment.user,
            amount_refunded=payment.amount_refunded,
            amount=payment.amount_refunded - previous,
            credits_clawed_back=payment.credits_clawed_back,
        )
    return payment


@transaction.atomic
def record_dispute(payment: Payment, *, amount_disputed: int) -> Payment:
    """Stripe withdrew `amount_disputed` of the payment for a dispute: claw back and flag it for staff."""
    return _record_dispute(payment, amount_disputed, reinstated=False)


@transaction.atomic
def record_dispute_reinstated(payment: Payment, *, amount_disputed: int) -> Payment:
    """Stripe returned the disputed `amount_disputed` (the dispute was won): the credits the
    dispute took come back, once, whichever of Stripe's events says so first and however often."""
    return _record_dispute(payment, amount_disputed, reinstated=True)


def credits_taken_back(payment: Payment, *, amount_refunded: int) -> int:
    """Credits a payment owes back in all once `amount_refunded` is refunded (and what is disputed
    now): the rule `_settle_clawback` applies, also used to preview a refund before it is made."""
    taken_amount = min(payment.amount, amount_refunded + payment.amount_disputed - payment.amount_reinstated)
    return payment.credits * taken_amount // payment.amount


# --- internals ------------------------------------------------------------------------------


def _lock(payment: Payment) -> Payment:
    # of=("self",): FOR UPDATE over the join would also lock the pack and user rows, queueing
    # every purchase of the same pack behind this one (PostgreSQL; SQLite has no row locks).
    return Payment.objects.select_for_update(of=("self",)).select_related("pack", "user").get(pk=payment.pk)


def _record_card(payment: Payment, card: tuple[str, str], *, replace: bool) -> bool:
    """Set the payment's card from Stripe's (brand, last4) when known (and, unless `replace`,
    only where none is recorded); says whether it changed."""
    brand, last4 = card
    if not last4 or (payment.card_last4 and not replace) or (brand, last4) == (payment.card_brand, payment.card_last4):
        return False
    payment.card_brand, payment.card_last4 = brand[:32], last4[:4]
    return True


def _queue_notice(payment: Payment, kind: str, *, amount: int, refunded_through: int = 0) -> None:
    """Record the email this fact owes the customer, in the fact's own transaction, once (the
    unique constraint; the payment's lock orders the paths). billing.receivers enqueues the
    sending on the fact's signal, and `billing_periodic` sends any whose enqueue was lost."""
    if not app_settings.BILLING_RECEIPT_EMAILS:
        return
    notice = PaymentNotice(payment=payment, kind=kind, refunded_through=refunded_through, amount=amount)
    PaymentNotice.objects.bulk_create([notice], ignore_conflicts=True)  # a repeat is the same notice


def _attach_intent(payment: Payment, intent_id: str) -> None:
    if payment.stripe_payment_intent_id is None:
        payment.stripe_payment_intent_id = intent_id
    elif payment.stripe_payment_intent_id != intent_id:
        raise PaymentMismatch(
            f"payment {payment.pk} belongs to {payment.stripe_payment_intent_id}, not {intent_id}",
            _("This payment does not match our records."),
        )


def _facts_match(payment: Payment, *, amount: int, currency: str) -> bool:
    # Strict types: a signed event is Stripe's, but a float 500.0 or a list must never pass as facts.
    amount_ok = isinstance(amount, int) and not isinstance(amount, bool) and amount == payment.amount
    return amount_ok and isinstance(currency, str) and currency.lower() == payment.currency


def _check_facts(payment: Payment, *, intent_id: str, amount: int, currency: str) -> None:
    _attach_intent(payment, intent_id)
    if not _facts_match(payment, amount=amount, currency=currency):
        raise PaymentMismatch(
            f"payment {payment.pk} is for {payment.amount} {payment.currency}, "
            f"Stripe reports {amount} {currency} on {intent_id}",
            _("This payment does not match our records."),
        )


def _check_amount(payment: Payment, amount: int, *, upper: int | None = None) -> None:
    """`amount` is a whole number from 0 to `upper` (default: the payment's amount)."""
    upper = payment.amount if upper is None else upper
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= upper:
        raise PaymentMismatch(
            f"payment {payment.pk} of {payment.amount}: refund/dispute amount {amount!r} is out of range",
            _("This payment does not match our records."),
        )


def _record_dispute(payment: Payment, amount: int, *, reinstated: bool) -> Payment:
    """Raise the disputed amount (and, when Stripe returned it, the reinstated amount) to
    `amount`, never lower: a dispute's amount is fixed, and its money is withdrawn at most once
    and returned at most once, so any order of its events ends in the same state. Runs in the
    caller's transaction."""
    payment = _lock(payment)
    _check_amount(payment, amount)
    disputed = max(payment.amount_disputed, amount)
    returned = max(payment.amount_reinstated, amount) if reinstated else payment.amount_reinstated
    newly_disputed = disputed > payment.amount_disputed
    if (disputed, returned) != (payment.amount_disputed, payment.amount_reinstated):
        payment.amount_disputed, payment.amount_reinstated = disputed, returned
        payment.save(update_fields=["amount_disputed", "amount_reinstated", "updated_at"])
    _settle_clawback(payment, why="dispute won")
    if newly_disputed:
        signals.send_after_commit(
            signals.payment_disputed, sender=Payment, payment=payment, user=payment.user, amount_disputed=disputed
        )
    return payment


def _bought(payment: Payment) -> str:
    """The purchase in the customer's words (their ledger shows it): never our internal ids."""
    day = timezone.localtime(payment.created_at)
    return f"{payment.pack.name} bought {day.day} {day:%b %Y}"


def _staff_note(payment: Payment, extra: str = "") -> str:
    """Our ids (and `extra`, e.g. who refunded) for the entries a refund or dispute writes: staff
    read them in the admin, the customer never does (the reason, `_bought`, is theirs)."""
    ids = f"Payment {payment.pk}, intent {payment.stripe_payment_intent_id or '-'}"
    return f"{ids}; {extra}" if extra else ids


def _settle_clawback(payment: Payment, *, why: str = "money returned", staff_note: str = "") -> None:
    """Bring the credits taken back in line with what is refunded or disputed now (payment locked).

    Credits due back = credits * min(amount, refunded + disputed) // amount, rounded down in the
    customer's favour; a full refund takes back every credit. What the balance cannot cover
    (already spent) is recorded as `credits_unrecovered` for staff, never taken below zero.
    When the money comes back to us (a refund failed, a dispute was won), so do the credits:
    what is still owed is forgiven first, then what was taken is given back (never more), so
    a customer never holds credits of a payment while still owing some of it.

    Each ledger entry's key names the stretch of the payment's running totals it covers (credits
    ever clawed back, credits ever given back), which only grow: a repeat of the same step
    collides on the unique key, and a later step never reuses an earlier one's key.
    """
    if payment.status not in CREDITED:
        return  # nothing was credited yet; fulfil_payment settles this when it credits
    before = (payment.credits_clawed_back, payment.credits_unrecovered, payment.credits_reinstated, payment.status)
    disputed = payment.amount_disputed - payment.amount_reinstated
    target = credits_taken_back(payment, amount_refunded=payment.amount_refunded)
    owed = payment.credits_clawed_back + payment.credits_unrecovered
    if target > owed:
        due = target - owed
        ever_clawed = payment.credits_clawed_back + payment.credits_reinstated
        entry, shortfall = ledger.claw_back_credits(
            payment.user,
            due,
            kind=LedgerEntry.Kind.DISPUTE if disputed else LedgerEntry.Kind.REFUND,
            reason=f"{'Dispute' if disputed else 'Refund'} of {_bought(payment)}",
            payment=payment,
            idempotency_key=f"payment:{payment.pk}:clawback:{ever_clawed}-{ever_clawed + due}",
            staff_note=_staff_note(payment, staff_note),
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
    elif target < owed:
        forgiven = min(owed - target, payment.credits_unrecovered)
        back = owed - target - forgiven
        payment.credits_unrecovered -= forgiven
        if back:
            given = payment.credits_reinstated
            ledger.reinstate_credits(
                payment.user,
                back,
                reason=f"{why.capitalize()}: credits of {_bought(payment)} given back",
                payment=payment,
                idempotency_key=f"payment:{payment.pk}:reinstatement:{given}-{given + back}",
                staff_note=_staff_note(payment, staff_note),
            )
            payment.credits_clawed_back -= back
            payment.credits_reinstated += back
            logger.info("payment %s: %s credits reinstated", payment.pk, back)
    if disputed:
        payment.status = Status.DISPUTED
    elif payment.amount_refunded >= payment.amount:
        payment.status = Status.REFUNDED
    else:
        # A dispute won or a refund failed: the payment stands again.
        payment.status = Status.SUCCEEDED
    after = (payment.credits_clawed_back, payment.credits_unrecovered, payment.credits_reinstated, payment.status)
    if after != before:
        payment.save(
            update_fields=["credits_clawed_back", "credits_unrecovered", "credits_reinstated", "status", "updated_at"]
        )
