"""The ledger's public operations: add, grant, spend, adjust, claw back, reinstate, expire, and
read a balance.

Each validates its arguments, then writes through the database's writer (postgresql.py or
portable.py) and turns what the database said (no row updated, a unique key taken) into the
answer: the entry, the first entry of a repeated operation, or InsufficientCredits. Every credit
opens a grant; every debit draws on grants (grants.py, docs/DESIGN.md "Credit grants").
"""

from __future__ import annotations

from datetime import datetime

from django.db import DataError, IntegrityError, connections, router, transaction
from django.db.models import Q
from django.utils import timezone

from billing import signals
from billing.exceptions import IdempotencyKeyReused, InsufficientCredits
from billing.ledger import grants, holds
from billing.ledger.portable import credit_portable, debit_portable
from billing.ledger.postgresql import credit_postgresql, debit_postgresql
from billing.models import MAX_CREDITS_PER_CHANGE, CreditGrant, LedgerEntry, Payment, Profile

Kind = LedgerEntry.Kind
Category = CreditGrant.Category
# No single change is bigger than this: a larger number is a typo (or an attack), never a
# purchase. Packs are limited to it in the model and the database, so every pack can be credited;
# balances are 64-bit columns, so sums of such changes do not overflow in practice.
MAX_DELTA = MAX_CREDITS_PER_CHANGE
# Profiles swept per transaction by expire_credits: few enough that a spend of one of them waits
# a fraction of a second for the lock, many enough that the statements per profile are few.
EXPIRY_BATCH = 1000
# What each kind of credit opens: (grant category, grant source).
OPENS = {
    Kind.PURCHASE: (Category.PAID, CreditGrant.Source.PURCHASE),
    Kind.ADJUSTMENT: (Category.PAID, CreditGrant.Source.ADJUSTMENT),
    Kind.BONUS: (Category.PROMOTIONAL, CreditGrant.Source.GRANT),
}


def get_balance(user, *, now: datetime | None = None) -> int:
    """The credits the user can spend now: 0 without a profile, never credits that have expired
    (whether or not a sweep has removed them yet), and never credits that active holds reserve."""
    return holds.available(user, now=now)


def add_credits(
    user,
    amount: int,
    *,
    kind: str,
    reason: str,
    actor=None,
    payment: Payment | None = None,
    idempotency_key: str | None = None,
    category: str | None = None,
    expires_at: datetime | None = None,
    staff_note: str = "",
) -> LedgerEntry:
    """Add `amount` (> 0) credits, in a new grant, and record why: `reason` for the customer,
    `staff_note` (optional) for staff only.

    `kind` is purchase (a paid grant), adjustment (a staff correction: paid, never expires) or
    bonus (a promotional grant unless `category` says otherwise). `expires_at` (None: never)
    must lie in the future.
    """
    _check_positive(amount)
    if kind not in OPENS:
        raise ValueError(f"kind must be one of {sorted(OPENS)}, got {kind!r}")
    default_category, source = OPENS[kind]
    category = category or default_category
    if category not in Category.values:
        raise ValueError(f"category must be one of {Category.values}, got {category!r}")
    if expires_at is not None and (not isinstance(expires_at, datetime) or timezone.is_naive(expires_at)):
        raise ValueError(f"expires_at must be a timezone-aware datetime or None, got {expires_at!r}")
    now = timezone.now()
    if expires_at is not None and expires_at <= now:
        raise ValueError("expires_at must lie in the future: credits that have expired cannot be granted")
    grant = {"category": category, "source": source, "expires_at": expires_at}
    return _apply(
        user, amount, kind=kind, reason=reason, actor=actor, payment=payment, idempotency_key=idempotency_key,
        grant=grant, now=now, staff_note=staff_note,
    )  # fmt: skip


def grant_credits(
    user,
    amount: int,
    *,
    reason: str,
    category: str = Category.PROMOTIONAL,
    expires_at: datetime | None = None,
    actor=None,
    idempotency_key: str | None = None,
    staff_note: str = "",
) -> LedgerEntry:
    """Give `amount` credits (> 0) that were not bought: promotional by default, valid until
    `expires_at` (None: never). Drawn before paid credits of the same expiry."""
    return add_credits(
        user, amount, kind=Kind.BONUS, reason=reason, actor=actor, idempotency_key=idempotency_key,
        category=category, expires_at=expires_at, staff_note=staff_note,
    )  # fmt: skip


def spend_credits(user, amount: int, *, reason: str, idempotency_key: str | None = None) -> LedgerEntry:
    """Take `amount` (> 0) credits, from the grants in the drawdown order; raises
    InsufficientCredits, changing nothing, if the spendable balance is short."""
    _check_positive(amount)
    return _apply(user, -amount, kind=Kind.SPEND, reason=reason, idempotency_key=idempotency_key)


def adjust_credits(
    user, delta: int, *, reason: str, actor, idempotency_key: str | None = None, staff_note: str = ""
) -> LedgerEntry:
    """A staff correction by a signed, non-zero `delta`; a reason (the customer's) is required, the
    actor and `staff_note` recorded. Credits added are paid and never expire; credits removed are
    drawn like a spend."""
    if not _is_int(delta) or delta == 0 or abs(delta) > MAX_DELTA:
        raise ValueError(f"delta must be a non-zero whole number of at most {MAX_DELTA:,} credits, got {delta!r}")
    if not (reason or "").strip():
        raise ValueError("a reason is required for an adjustment")
    if delta > 0:
        return add_credits(
            user, delta, kind=Kind.ADJUSTMENT, reason=reason, actor=actor, idempotency_key=idempotency_key,
            staff_note=staff_note,
        )  # fmt: skip
    return _apply(
        user, delta, kind=Kind.ADJUSTMENT, reason=reason, actor=actor, idempotency_key=idempotency_key,
        staff_note=staff_note,
    )  # fmt: skip


def claw_back_credits(
    user,
    amount: int,
    *,
    kind: str,
    reason: str,
    payment: Payment | None = None,
    idempotency_key: str | None = None,
    staff_note: str = "",
) -> tuple[LedgerEntry | None, int]:
    """Remove up to `amount` credits, never below zero. Returns (entry or None, credits not recovered).

    Used for refunds and disputes: credits already spent (or expired) cannot be taken back, and
    the shortfall is the caller's to record. The payment's own grant is drawn first, then the
    others in the drawdown order. Must run inside the caller's transaction when the caller needs
    the shortfall recorded atomically with the entry.
    """
    _check_positive(amount)
    if kind not in (Kind.REFUND, Kind.DISPUTE, Kind.ADJUSTMENT):
        raise ValueError(f"kind must be refund, dispute or adjustment, got {kind!r}")
    fields = _fields(
        -amount, kind=kind, reason=reason, payment=payment, idempotency_key=idempotency_key, staff_note=staff_note
    )
    alias = router.db_for_write(LedgerEntry)
    with transaction.atomic(using=alias):
        profile = grants.lock_profile(alias, user_id=user.pk)
        now = timezone.now()  # once the lock is won: what has expired by then is not drawn
        if idempotency_key is not None:
            # Under the profile's row lock, so an earlier clawback with this key has committed.
            done = LedgerEntry.objects.using(alias).filter(idempotency_key=idempotency_key).first()
            if done is not None:
                return done, 0
        if profile.next_expiry is not None and profile.next_expiry <= now:
            grants.expire_locked(alias, profile, now)
        credits = Profile.objects.using(alias).filter(pk=profile.pk).values_list("credits", flat=True).get()
        take = min(credits, amount)
        if take == 0:
            return None, amount
        own = grants.own_grant_id(alias, payment.pk) if payment is not None else None
        entry = debit_portable(alias, user.pk, {**fields, "delta": -take}, now, first_grant_id=own, ignore_holds=True)
        return entry, amount - take


def reinstate_credits(
    user, amount: int, *, payment: Payment, reason: str, idempotency_key: str, staff_note: str = ""
) -> LedgerEntry:
    """Give back `amount` credits a refund or dispute of `payment` took (the refund failed, the
    dispute was won): into the grants they were taken from, each keeping its expiry (the
    payment's own grant first). Credits taken before grants existed come back as a new paid grant."""
    _check_positive(amount)
    fields = _fields(
        amount, kind=Kind.REINSTATEMENT, reason=reason, payment=payment, idempotency_key=idempotency_key,
        staff_note=staff_note,
    )  # fmt: skip
    alias = router.db_for_write(LedgerEntry)
    with transaction.atomic(using=alias):
        profile = grants.lock_profile(alias, user_id=user.pk)
        now = timezone.now()
        done = LedgerEntry.objects.using(alias).select_related("profile").filter(idempotency_key=idempotency_key)
        if done:
            return _check_same_operation(done[0], user, fields)
        owed = grants.taken_back(alias, payment.pk)
        own = grants.own_grant_id(alias, payment.pk)
        back, left = {}, amount
        for grant_id in sorted(owed, key=lambda grant_id: (grant_id != own, grant_id)):
            back[grant_id] = min(owed[grant_id], left)
            left -= back[grant_id]
            if left == 0:
                break
        entry = credit_portable(
            alias,
            user.pk,
            fields,
            now,
            grant={"category": Category.PAID, "source": CreditGrant.Source.ADJUSTMENT, "expires_at": None}
            if left
            else None,
            restore={grant_id: credits for grant_id, credits in back.items() if credits},
            profile_id=profile.pk,
        )
        return entry


def expire_credits(now: datetime | None = None) -> int:
    """Sweep every profile whose credits or holds have expired: one `expiry` entry per expired
    grant, each written once (a second run, or two at once, find nothing left), and expired
    holds marked so. Returns the credits expired. Spendable balances never include expired
    credits or expired holds either way; this makes the books say so."""
    now = now or timezone.now()
    alias = router.db_for_write(LedgerEntry)
    total = 0
    due = Profile.objects.using(alias).filter(Q(next_expiry__lte=now) | Q(next_hold_expiry__lte=now))
    due_ids = list(due.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(due_ids), EXPIRY_BATCH):
        # A batch of profiles per transaction, their rows locked in id order (so two sweeps at
        # once never deadlock: the second waits, then finds the grants empty), and each hint
        # read again under the lock.
        with transaction.atomic(using=alias):
            locked = list(
                Profile.objects.using(alias)
                .select_for_update()
                .filter(pk__in=due_ids[start : start + EXPIRY_BATCH])
                .order_by("pk")
                .values_list("pk", "next_expiry", "next_hold_expiry")
            )
            lapsed = [pk for pk, next_expiry, _ in locked if next_expiry is not None and next_expiry <= now]
            total += grants.expire_many_locked(alias, lapsed, now)
            for pk, _, next_hold_expiry in locked:
                if next_hold_expiry is not None and next_hold_expiry <= now:
                    holds.expire_holds_locked(alias, pk, now)
    return total


# --- internals ------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive(amount) -> None:
    if not _is_int(amount) or not 0 < amount <= MAX_DELTA:
        raise ValueError(f"amount must be a positive whole number of at most {MAX_DELTA:,} credits, got {amount!r}")


def _fields(
    delta: int, *, kind: str, reason: str, actor=None, payment=None, idempotency_key=None, staff_note=""
) -> dict:
    reason = (reason or "").strip()
    if not isinstance(staff_note, str):
        raise ValueError(f"a staff note must be a string, got {staff_note!r}")
    staff_note = staff_note.strip()
    if not reason:
        raise ValueError("a reason is required for every ledger entry")
    if idempotency_key is not None and not idempotency_key.strip():
        raise ValueError("an idempotency key, when given, must not be blank")
    if idempotency_key is not None and len(idempotency_key) > LedgerEntry._meta.get_field("idempotency_key").max_length:
        raise ValueError("an idempotency key must be at most 255 characters")
    if "\x00" in reason or "\x00" in staff_note or "\x00" in (idempotency_key or ""):
        # PostgreSQL text cannot hold NUL; refuse it everywhere rather than fail on one database.
        raise ValueError("a reason, staff note or idempotency key cannot contain NUL characters")
    return {
        "delta": delta,
        "kind": kind,
        "reason": reason[:255],
        "staff_note": staff_note[: LedgerEntry._meta.get_field("staff_note").max_length],
        "actor_id": actor.pk if actor is not None else None,
        "payment_id": payment.pk if payment is not None else None,
        "idempotency_key": idempotency_key,
    }


def _apply(
    user,
    delta: int,
    *,
    kind: str,
    reason: str,
    actor=None,
    payment: Payment | None = None,
    idempotency_key: str | None = None,
    grant: dict | None = None,
    now: datetime | None = None,
    staff_note: str = "",
) -> LedgerEntry:
    fields = _fields(
        delta, kind=kind, reason=reason, actor=actor, payment=payment, idempotency_key=idempotency_key,
        staff_note=staff_note,
    )  # fmt: skip
    now = now or timezone.now()
    for _attempt in range(3):
        try:
            entry = _write(user.pk, fields, now, grant)
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
            if delta < 0 and kind in (Kind.SPEND, Kind.ADJUSTMENT):
                # Money taken back (a refund, a dispute) never sets off a new charge.
                _debited(user.pk)
            return entry
        # No row was updated: the balance is short, the key was used before, credits have
        # expired since the last sweep, or there is no profile yet.
        if idempotency_key is not None or (payment is not None and kind == Kind.PURCHASE):
            existing = _existing_entry(fields)
            if existing is not None:
                return _check_same_operation(existing, user, fields)
        if delta > 0:
            if not Profile.objects.filter(user_id=user.pk).exists():
                Profile.objects.get_or_create(user_id=user.pk)
                continue
            break
        # A debit may find its way blocked by what has lapsed: expired grants, expired holds.
        if not holds.sweep_lapsed(router.db_for_write(LedgerEntry), user, now):
            break
    raise InsufficientCredits(balance=get_balance(user, now=now), requested=-delta)


def _write(user_id: int, fields: dict, now, grant: dict | None) -> LedgerEntry | None:
    """Move the balance and its grants and append the entry, in one transaction (its own, or a
    savepoint in the caller's); None when the conditional UPDATE matched no row."""
    alias = router.db_for_write(LedgerEntry)
    connection = connections[alias]
    if connection.vendor != "postgresql":
        if fields["delta"] > 0:
            return credit_portable(alias, user_id, fields, now, grant=grant)
        return debit_portable(alias, user_id, fields, now)
    write = credit_postgresql if fields["delta"] > 0 else debit_postgresql
    args = (alias, user_id, fields, now, grant) if fields["delta"] > 0 else (alias, user_id, fields, now)
    if connection.get_autocommit() and not connection.in_atomic_block:
        # One statement in autocommit is one transaction: no BEGIN/COMMIT round trips.
        return write(*args)
    with transaction.atomic(using=alias):
        return write(*args)


def _debited(user_id: int) -> None:
    # After the commit, and only when something listens (auto-recharge does): the spend's
    # transaction never waits for what a debit sets off.
    if signals.credits_debited.receivers:
        signals.send_after_commit(
            signals.credits_debited, sender=Profile, using=router.db_for_write(LedgerEntry), user_id=user_id
        )


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
