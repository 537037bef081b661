"""Holds: reserve credits now, spend what was really used later (docs/DESIGN.md, "Holds").

`hold_credits` reserves: the hold's amount joins `Profile.held`, and every spend and hold asks
for `credits - held`, in the same conditional UPDATE that takes the profile's row lock, so
concurrent holds and spends in any number of processes never commit more than the balance.
`capture_hold` ends the hold once: the reservation is freed and what was used becomes a
`capture` ledger entry drawn from the grants in the drawdown order (keyed `hold:<id>:capture`,
so a second capture of the same hold finds the first). `release_hold` frees it all. A hold past
its `expires_at` no longer reserves anything: it is swept (status `expired`) by the next write
that needs its credits, by `expire_credits`, or by its own capture, which then succeeds only if
the credits are still there.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import IntegrityError, connections, router, transaction
from django.db.models import F, Min, Q, Sum
from django.utils import timezone

from billing import signals
from billing.exceptions import HoldEnded, IdempotencyKeyReused, InsufficientCredits
from billing.ledger import grants
from billing.models import MAX_CREDITS_PER_CHANGE, Hold, LedgerEntry, Profile

Status = Hold.Status
DEFAULT_EXPIRES_IN = timedelta(minutes=15)
MAX_EXPIRES_IN = timedelta(days=30)


def hold_credits(
    user,
    amount: int,
    *,
    reason: str,
    expires_in: timedelta = DEFAULT_EXPIRES_IN,
    idempotency_key: str | None = None,
) -> Hold:
    """Reserve `amount` credits for `expires_in` (at most 30 days). Raises InsufficientCredits,
    reserving nothing, when fewer are available; a repeated `idempotency_key` returns the first hold."""
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_CREDITS_PER_CHANGE:
        raise ValueError(
            f"amount must be a positive whole number of at most {MAX_CREDITS_PER_CHANGE:,}, got {amount!r}"
        )
    reason = (reason or "").strip()
    if not reason or "\x00" in reason:
        raise ValueError("a hold needs a reason (without NUL characters)")
    if not isinstance(expires_in, timedelta) or not timedelta(0) < expires_in <= MAX_EXPIRES_IN:
        raise ValueError(f"expires_in must be a timedelta above zero and at most {MAX_EXPIRES_IN}, got {expires_in!r}")
    if idempotency_key is not None and (not idempotency_key.strip() or len(idempotency_key) > 255):
        raise ValueError("an idempotency key, when given, must not be blank and at most 255 characters")
    alias = router.db_for_write(Hold)
    now = timezone.now()
    fields = {
        "amount": amount,
        "reason": reason[:255],
        "expires_at": now + expires_in,
        "idempotency_key": idempotency_key,
        "now": now,
    }
    for _attempt in range(3):
        try:
            hold = _reserve(alias, user.pk, fields)
        except IntegrityError:
            existing = Hold.objects.using(alias).filter(idempotency_key=idempotency_key).select_related("profile")
            existing = existing.first() if idempotency_key is not None else None
            if existing is None:
                raise
            if existing.profile.user_id != user.pk or existing.amount != amount:
                raise IdempotencyKeyReused(
                    f"idempotency key {idempotency_key!r} was first used for another hold ({existing.pk})"
                ) from None
            return existing
        if hold is not None:
            if signals.credits_debited.receivers:
                # Credits on hold leave the available balance as a debit does (auto-recharge).
                signals.send_after_commit(signals.credits_debited, sender=Profile, using=alias, user_id=user.pk)
            return hold
        if not sweep_lapsed(alias, user, now):
            break
    raise InsufficientCredits(balance=available(user, now=now), requested=amount)


def capture_hold(hold: Hold, amount: int | None = None, *, reason: str | None = None) -> LedgerEntry | None:
    """Spend `amount` (default: all) of the hold's credits and free the rest, exactly once.

    Returns the `capture` entry (None when nothing was used). A repeated capture of a captured
    hold returns its entry. Raises HoldEnded for a released hold, ValueError for an amount
    outside 0..hold.amount, and InsufficientCredits when the hold had expired (or its credits
    expired meanwhile) and the credits are no longer there.
    """
    amount = hold.amount if amount is None else amount
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= hold.amount:
        raise ValueError(f"a capture takes from 0 to the {hold.amount} held credits, got {amount!r}")
    reason = ((reason or hold.reason or "").strip() or "capture")[:255]
    if "\x00" in reason:
        raise ValueError("a reason cannot contain NUL characters")
    alias = router.db_for_write(Hold)
    now = timezone.now()
    key = f"hold:{hold.pk}:capture"
    connection = connections[alias]
    if connection.vendor == "postgresql":
        # The common case in one call: an active, unexpired hold and the credits there.
        from billing.ledger.postgresql import capture_postgresql

        try:
            if connection.get_autocommit() and not connection.in_atomic_block:
                done = capture_postgresql(alias, hold.pk, amount, reason, key, now)
            else:
                with transaction.atomic(using=alias):
                    done = capture_postgresql(alias, hold.pk, amount, reason, key, now)
        except IntegrityError:
            done = None  # another capture of this hold won the key: the slow path returns its entry
        if done is not None:
            return done[0]
    return _capture_locked(alias, hold.pk, amount, reason, key, now)


def release_hold(hold: Hold) -> Hold:
    """Free the hold's credits without using any. Releasing an ended hold changes nothing."""
    alias = router.db_for_write(Hold)
    with transaction.atomic(using=alias):
        grants.lock_profile(alias, profile_id=hold.profile_id)
        current = Hold.objects.using(alias).get(pk=hold.pk)
        if current.status == Status.ACTIVE:
            _end(alias, current, Status.RELEASED, timezone.now())
        return current


def expire_holds_locked(alias: str, profile_id: int, now) -> int:
    """Sweep the profile's active holds that have expired (its row is locked by the caller).
    Returns the credits they stop reserving."""
    expired = list(Hold.objects.using(alias).filter(profile_id=profile_id, status=Status.ACTIVE, expires_at__lte=now))
    for hold in expired:
        _end(alias, hold, Status.EXPIRED, now, recompute=False)
    _recompute_hint(alias, profile_id)
    return sum(hold.amount for hold in expired)


def available(user, *, now: datetime | None = None) -> int:
    """What the user can spend or hold now: credits less active, unexpired holds, less credits
    of grants that have expired (swept or not). Never below zero."""
    alias = router.db_for_read(Profile)
    row = (
        Profile.objects.using(alias)
        .filter(user_id=user.pk)
        .values_list("credits", "held", "next_expiry", "next_hold_expiry")
        .first()
    )
    if row is None:
        return 0
    credits, held, next_expiry, next_hold_expiry = row
    now = now or timezone.now()
    known = available_from_hints(credits, held, next_expiry, next_hold_expiry, now)
    if known is not None:
        return known
    if next_expiry is not None and next_expiry <= now:
        credits -= grants.expired_remaining(alias, user_id=user.pk, now=now)
    if next_hold_expiry is not None and next_hold_expiry <= now:
        lapsed = Hold.objects.using(alias).filter(profile__user_id=user.pk, status=Status.ACTIVE, expires_at__lte=now)
        held -= lapsed.aggregate(total=Sum("amount"))["total"] or 0
    return max(credits - held, 0)


def available_from_hints(credits: int, held: int, next_expiry, next_hold_expiry, now) -> int | None:
    """`available` from a profile's columns alone, when its hints say nothing has lapsed (the
    common case); None when expired grants or holds must be read to know."""
    if (next_expiry is None or next_expiry > now) and (next_hold_expiry is None or next_hold_expiry > now):
        return max(credits - held, 0)
    return None


# --- internals ------------------------------------------------------------------------------


def _reserve(alias: str, user_id: int, fields: dict) -> Hold | None:
    connection = connections[alias]
    if connection.vendor == "postgresql":
        from billing.ledger.postgresql import hold_postgresql

        if connection.get_autocommit() and not connection.in_atomic_block:
            return hold_postgresql(alias, user_id, fields)
        with transaction.atomic(using=alias):
            return hold_postgresql(alias, user_id, fields)
    with transaction.atomic(using=alias):
        return _reserve_portable(alias, user_id, fields)


def _reserve_portable(alias: str, user_id: int, fields: dict) -> Hold | None:
    now = fields["now"]
    reserved = (
        Profile.objects.using(alias)
        .filter(user_id=user_id, credits__gte=F("held") + fields["amount"])
        .filter(Q(next_expiry__isnull=True) | Q(next_expiry__gt=now))
    )
    changes = {"held": F("held") + fields["amount"]}
    updated = reserved.update(**changes)
    if not updated:
        return None
    profile = Profile.objects.using(alias).filter(user_id=user_id)
    profile.filter(Q(next_hold_expiry__isnull=True) | Q(next_hold_expiry__gt=fields["expires_at"])).update(
        next_hold_expiry=fields["expires_at"]
    )
    return Hold.objects.using(alias).create(
        profile_id=profile.values_list("pk", flat=True).get(),
        amount=fields["amount"],
        reason=fields["reason"],
        expires_at=fields["expires_at"],
        idempotency_key=fields["idempotency_key"],
        created_at=now,
    )


def sweep_lapsed(alias: str, user, now) -> bool:
    """Sweep what has lapsed (expired grants, expired holds) when it could be in the way; whether
    anything could change (so trying again may succeed)."""
    state = Profile.objects.using(alias).filter(user_id=user.pk).values_list("next_expiry", "next_hold_expiry").first()
    if state is None:
        Profile.objects.using(alias).get_or_create(user_id=user.pk)
        return True
    next_expiry, next_hold_expiry = state
    due = [hint for hint in (next_expiry, next_hold_expiry) if hint is not None and hint <= now]
    if not due:
        return False
    with transaction.atomic(using=alias):
        profile = grants.lock_profile(alias, user_id=user.pk)
        if next_expiry is not None and next_expiry <= now:
            grants.expire_locked(alias, profile, now)
        if next_hold_expiry is not None and next_hold_expiry <= now:
            expire_holds_locked(alias, profile.pk, now)
    return True


def _capture_locked(alias: str, hold_id: int, amount: int, reason: str, key: str, now) -> LedgerEntry | None:
    from billing.ledger.portable import debit_portable
    from billing.ledger.postgresql import capture_fields

    with transaction.atomic(using=alias):
        hold = Hold.objects.using(alias).get(pk=hold_id)
        profile = grants.lock_profile(alias, profile_id=hold.profile_id)
        hold = Hold.objects.using(alias).select_related("entry").get(pk=hold_id)
        if hold.status == Status.CAPTURED:
            return hold.entry
        if hold.status == Status.RELEASED:
            raise HoldEnded(f"hold {hold.pk} was released; nothing can be captured")
        if profile.next_expiry is not None and profile.next_expiry <= now:
            grants.expire_locked(alias, profile, now)
        if hold.status == Status.ACTIVE and hold.expires_at <= now:
            expire_holds_locked(alias, profile.pk, now)
            hold.refresh_from_db(using=alias)
        if hold.status == Status.ACTIVE:
            # Free the reservation first: the debit then asks for `credits - held` as any spend does.
            _end(alias, hold, Status.CAPTURED, now)
        entry = None
        if amount:
            entry = debit_portable(alias, profile.user_id, capture_fields(amount, reason, key), now)
            if entry is None:
                # The hold had expired (or its credits did) and what it needs is gone: nothing is
                # captured, and the hold stays as it was (the exception undoes this transaction).
                raise InsufficientCredits(balance=available(profile.user, now=now), requested=amount)
        Hold.objects.using(alias).filter(pk=hold.pk).update(
            status=Status.CAPTURED, captured=amount, entry=entry, ended_at=now
        )
        return entry


def _end(alias: str, hold: Hold, status: str, now, *, recompute: bool = True) -> None:
    Profile.objects.using(alias).filter(pk=hold.profile_id).update(held=F("held") - hold.amount)
    Hold.objects.using(alias).filter(pk=hold.pk).update(status=status, ended_at=now)
    hold.status = status
    if recompute:
        _recompute_hint(alias, hold.profile_id)


def _recompute_hint(alias: str, profile_id: int) -> None:
    soonest = (
        Hold.objects.using(alias)
        .filter(profile_id=profile_id, status=Status.ACTIVE)
        .aggregate(soonest=Min("expires_at"))["soonest"]
    )
    Profile.objects.using(alias).filter(pk=profile_id).update(next_hold_expiry=soonest)
