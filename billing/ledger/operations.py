"""The ledger's public operations: add, spend, adjust, claw back, read a balance.

Each validates its arguments, then `_apply` writes through the database's writer (postgresql.py
or portable.py) and turns what the database said (no row updated, a unique key taken) into the
answer: the entry, the first entry of a repeated operation, or InsufficientCredits.
"""

from __future__ import annotations

from django.db import DataError, IntegrityError, connections, router, transaction
from django.utils import timezone

from billing.exceptions import IdempotencyKeyReused, InsufficientCredits
from billing.ledger.portable import write_portable
from billing.ledger.postgresql import write_postgresql
from billing.models import MAX_CREDITS_PER_CHANGE, LedgerEntry, Payment, Profile

Kind = LedgerEntry.Kind
# No single change is bigger than this: a larger number is a typo (or an attack), never a
# purchase. Packs are limited to it in the model and the database, so every pack can be credited;
# balances are 64-bit columns, so sums of such changes do not overflow in practice.
MAX_DELTA = MAX_CREDITS_PER_CHANGE


def get_balance(user) -> int:
    """The user's current balance (0 for a user without a profile yet)."""
    balance = Profile.objects.filter(user_id=user.pk).values_list("credits", flat=True).first()
    return balance or 0


def add_credits(
    user,
    amount: int,
    *,
    kind: str,
    reason: str,
    actor=None,
    payment: Payment | None = None,
    idempotency_key: str | None = None,
) -> LedgerEntry:
    """Add `amount` (> 0) credits to the user's balance and record why."""
    _check_positive(amount)
    if kind not in Kind.values or kind == Kind.SPEND:
        raise ValueError(f"kind must be one of {sorted(set(Kind.values) - {Kind.SPEND})}, got {kind!r}")
    return _apply(user, amount, kind=kind, reason=reason, actor=actor, payment=payment, idempotency_key=idempotency_key)


def spend_credits(user, amount: int, *, reason: str, idempotency_key: str | None = None) -> LedgerEntry:
    """Take `amount` (> 0) credits; raises InsufficientCredits, changing nothing, if the balance is short."""
    _check_positive(amount)
    return _apply(user, -amount, kind=Kind.SPEND, reason=reason, idempotency_key=idempotency_key)


def adjust_credits(user, delta: int, *, reason: str, actor, idempotency_key: str | None = None) -> LedgerEntry:
    """A staff correction by a signed, non-zero `delta`; a reason is required and the actor recorded."""
    if not _is_int(delta) or delta == 0 or abs(delta) > MAX_DELTA:
        raise ValueError(f"delta must be a non-zero whole number of at most {MAX_DELTA:,} credits, got {delta!r}")
    if not (reason or "").strip():
        raise ValueError("a reason is required for an adjustment")
    return _apply(user, delta, kind=Kind.ADJUSTMENT, reason=reason, actor=actor, idempotency_key=idempotency_key)


def claw_back_credits(
    user, amount: int, *, kind: str, reason: str, payment: Payment | None = None, idempotency_key: str | None = None
) -> tuple[LedgerEntry | None, int]:
    """Remove up to `amount` credits, never below zero. Returns (entry or None, credits not recovered).

    Used for refunds and disputes: credits already spent cannot be taken back, and the shortfall
    is the caller's to record. Must run inside the caller's transaction when the caller needs the
    shortfall recorded atomically with the entry.
    """
    _check_positive(amount)
    if kind not in (Kind.REFUND, Kind.DISPUTE, Kind.ADJUSTMENT):
        raise ValueError(f"kind must be refund, dispute or adjustment, got {kind!r}")
    with transaction.atomic():
        profile = _profile_for_update(user)
        if idempotency_key is not None:
            # Under the profile's row lock, so an earlier clawback with this key has committed.
            done = LedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
            if done is not None:
                return done, 0
        take = min(profile.credits, amount)
        if take == 0:
            return None, amount
        entry = _apply(user, -take, kind=kind, reason=reason, payment=payment, idempotency_key=idempotency_key)
        return entry, amount - take


# --- internals ------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive(amount) -> None:
    if not _is_int(amount) or not 0 < amount <= MAX_DELTA:
        raise ValueError(f"amount must be a positive whole number of at most {MAX_DELTA:,} credits, got {amount!r}")


def _profile_for_update(user) -> Profile:
    profile, _ = Profile.objects.select_for_update().get_or_create(user_id=user.pk)
    return profile


def _apply(
    user,
    delta: int,
    *,
    kind: str,
    reason: str,
    actor=None,
    payment: Payment | None = None,
    idempotency_key: str | None = None,
) -> LedgerEntry:
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a reason is required for every ledger entry")
    if idempotency_key is not None and not idempotency_key.strip():
        raise ValueError("an idempotency key, when given, must not be blank")
    if idempotency_key is not None and len(idempotency_key) > LedgerEntry._meta.get_field("idempotency_key").max_length:
        raise ValueError("an idempotency key must be at most 255 characters")
    if "\x00" in reason or "\x00" in (idempotency_key or ""):
        # PostgreSQL text cannot hold NUL; refuse it everywhere rather than fail on one database.
        raise ValueError("a reason or idempotency key cannot contain NUL characters")
    fields = {
        "delta": delta,
        "kind": kind,
        "reason": reason[:255],
        "actor_id": actor.pk if actor is not None else None,
        "payment_id": payment.pk if payment is not None else None,
        "idempotency_key": idempotency_key,
    }
    for attempt in range(2):
        try:
            entry = _write(user.pk, fields)
        except IntegrityError:
            # The only unique keys an insert can collide on are the idempotency key and the
            # one-purchase-per-payment rule: either way the operation already happened.
            existing = _existing_entry(fields)
            if existing is None:
                raise
            return _check_same_operation(existing, user, fields)
        except DataError as exc:
            # PostgreSQL refused the new balance itself (beyond its integer range): nothing changed.
            raise ValueError(f"the balance cannot take {delta:+d} more credits: {exc}") from exc
        if entry is not None:
            return entry
        # No row was updated: the balance is short, the key was used before, or there is no profile.
        if idempotency_key is not None or (payment is not None and kind == Kind.PURCHASE):
            existing = _existing_entry(fields)
            if existing is not None:
                return _check_same_operation(existing, user, fields)
        if attempt == 0 and not Profile.objects.filter(user_id=user.pk).exists():
            Profile.objects.get_or_create(user_id=user.pk)
            continue
        raise InsufficientCredits(balance=get_balance(user), requested=-delta)
    raise AssertionError("unreachable")


def _write(user_id: int, fields: dict) -> LedgerEntry | None:
    """Move the balance and append its entry, in one transaction (its own, or a savepoint in the
    caller's); None when the conditional UPDATE matched no row."""
    alias = router.db_for_write(LedgerEntry)
    connection = connections[alias]
    now = timezone.now()
    if connection.vendor == "postgresql":
        if connection.get_autocommit() and not connection.in_atomic_block:
            # One statement in autocommit is one transaction: no BEGIN/COMMIT round trips.
            return write_postgresql(alias, user_id, fields, now)
        with transaction.atomic(using=alias):
            return write_postgresql(alias, user_id, fields, now)
    return write_portable(alias, user_id, fields, now)


def _existing_entry(fields: dict) -> LedgerEntry | None:
    if fields["idempotency_key"] is not None:
        found = LedgerEntry.objects.select_related("profile").filter(idempotency_key=fields["idempotency_key"]).first()
        if found is not None:
            return found
    if fields["payment_id"] is not None and fields["kind"] == Kind.PURCHASE:
        return LedgerEntry.objects.filter(payment_id=fields["payment_id"], kind=Kind.PURCHASE).first()
    return None


def _check_same_operation(existing: LedgerEntry, user, fields: dict) -> LedgerEntry:
    same = (
        existing.profile.user_id == user.pk
        and existing.delta == fields["delta"]
        and existing.kind == fields["kind"]
        and existing.payment_id == fields["payment_id"]
    )
    if not same:
        raise IdempotencyKeyReused(
            f"idempotency key {fields['idempotency_key']!r} was first used for a different operation "
            f"(entry {existing.pk}: {existing.delta:+d} {existing.kind})"
        )
    return existing
