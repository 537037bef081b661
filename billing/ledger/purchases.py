"""A purchase Stripe reports succeeded: its payment marked succeeded and its credits added,
together (one statement on PostgreSQL, one transaction elsewhere), for billing.fulfilment's common
case (docs/DESIGN.md, "Exactly-once fulfilment").

The payment's change rides in the ledger's statement because the two must commit together and
one round trip is the point; billing.fulfilment decides when to use it, and settles every other
case under the payment's row lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import DataError, connections, router, transaction
from django.db.models import Q
from django.utils import timezone

from billing.ledger import holds
from billing.ledger.operations import OPENS, Kind, _check_positive, _fields, get_balance
from billing.ledger.portable import credit_portable
from billing.ledger.postgresql import purchase_postgresql
from billing.models import LedgerEntry, Payment, PaymentNotice, Profile


@dataclass(frozen=True)
class Purchase:
    """A purchase credited by `credit_purchase`."""

    entry: LedgerEntry
    available: int  # the user's spendable balance right after it (get_balance at that moment)


def credit_purchase(
    payment: Payment,
    *,
    intent_id: str,
    open_statuses,
    reason: str,
    idempotency_key: str,
    expires_at: datetime | None = None,
    card: tuple[str, str] | None = None,
    receipt_amount: int | None = None,
) -> Purchase | None:
    """Credit `payment` (a purchase Stripe reports succeeded through `intent_id`) and mark it
    succeeded, together: one statement on PostgreSQL, one transaction elsewhere.

    Only while the payment is in one of `open_statuses`, belongs to `intent_id` or to no intent
    yet, nothing of it was refunded or disputed, and its user has a profile; otherwise nothing
    changes and the answer is None, for billing.fulfilment's locking path to settle. The
    payment's UPDATE goes first and decides, so a path that changed the payment meanwhile (the
    webhook crediting it, a refund recorded) makes this one change nothing; the one purchase
    entry per payment (a unique index) stays the backstop. `payment` is updated in memory.
    `card` (brand, last4), when known, is recorded on the payment; `receipt_amount`, when given,
    records the receipt email the purchase owes (billing.notices) in the same statement.
    Raises ValueError when the ledger refuses the credits (nothing changed) and IntegrityError
    where the database refuses the payment's change (e.g. another payment holds the intent).
    """
    _check_positive(payment.credits)
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("expires_at must lie in the future: credits that have expired cannot be granted")
    fields = _fields(
        payment.credits, kind=Kind.PURCHASE, reason=reason, payment=payment, idempotency_key=idempotency_key
    )
    category, source = OPENS[Kind.PURCHASE]
    grant = {"category": category, "source": source, "expires_at": expires_at}
    change = {
        "intent_id": intent_id,
        "open_statuses": [str(status) for status in open_statuses],
        "succeeded": Payment.Status.SUCCEEDED,
        "card_brand": card[0][:32] if card else None,
        "card_last4": card[1][:4] if card else None,
        "receipt_amount": receipt_amount,
    }
    now = timezone.now()
    alias = router.db_for_write(LedgerEntry)
    try:
        if connections[alias].vendor == "postgresql":
            done = _purchase_postgresql(alias, payment.user_id, fields, now, grant, change)
        else:
            done = _purchase_portable(alias, payment, fields, now, grant, change)
    except DataError as exc:
        raise ValueError(f"the balance cannot take {payment.credits:+d} more credits: {exc}") from exc
    if done is None:
        return None
    entry, (held, next_expiry, next_hold_expiry) = done
    payment.status = Payment.Status.SUCCEEDED
    payment.stripe_payment_intent_id = intent_id
    payment.failure_message = payment.failure_code = payment.needs_attention = ""
    payment.updated_at = now
    if card:
        payment.card_brand, payment.card_last4 = change["card_brand"], change["card_last4"]
    available = holds.available_from_hints(entry.balance_after, held, next_expiry, next_hold_expiry, now)
    if available is None:
        available = get_balance(payment.user, now=now)
    return Purchase(entry, available)


def _purchase_postgresql(alias, user_id, fields, now, grant, change):
    connection = connections[alias]
    if connection.get_autocommit() and not connection.in_atomic_block:
        return purchase_postgresql(alias, user_id, fields, now, grant, change)
    with transaction.atomic(using=alias):  # a savepoint: a refusal leaves the caller's transaction usable
        return purchase_postgresql(alias, user_id, fields, now, grant, change)


def _purchase_portable(alias, payment, fields, now, grant, change):
    with transaction.atomic(using=alias):
        payments = Payment.objects.using(alias).filter(
            Q(stripe_payment_intent_id__isnull=True) | Q(stripe_payment_intent_id=change["intent_id"]),
            pk=payment.pk,
            status__in=change["open_statuses"],
            amount_refunded=0,
            amount_disputed=0,
            credits_clawed_back=0,
            credits_unrecovered=0,
        )
        card = {"card_brand": change["card_brand"], "card_last4": change["card_last4"]}
        marked = payments.update(
            status=change["succeeded"],
            stripe_payment_intent_id=change["intent_id"],
            failure_message="",
            failure_code="",
            needs_attention="",
            updated_at=now,
            **(card if card["card_last4"] is not None else {}),
        )
        entry = credit_portable(alias, payment.user_id, fields, now, grant=grant) if marked else None
        if entry is None:
            transaction.set_rollback(True, using=alias)  # no profile: the payment stays as it was
            return None
        if change["receipt_amount"] is not None:
            notice = PaymentNotice(
                payment_id=payment.pk,
                kind=PaymentNotice.Kind.RECEIPT,
                amount=change["receipt_amount"],
                created_at=now,
            )
            PaymentNotice.objects.using(alias).bulk_create([notice], ignore_conflicts=True)
        profile = Profile.objects.using(alias).filter(pk=entry.profile_id)
        return entry, profile.values_list("held", "next_expiry", "next_hold_expiry").get()
