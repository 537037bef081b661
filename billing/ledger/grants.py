"""Credit grants: which lot each credit belongs to, the drawdown order, and expiry.

Every credit a profile holds belongs to one `CreditGrant`; a debit draws from the open grants in
the drawdown order and records each draw as a `GrantAllocation` (docs/DESIGN.md, "Credit grants").
Everything here runs inside a transaction that already holds the profile's row lock (or, on
SQLite, the database's write lock): every writer of a profile's grants takes that lock first,
so grants need no locks of their own and are never read stale.

Expired credits are never spendable, swept or not. `Profile.next_expiry` is a hint no open grant
expires before: while it lies in the future (or is null) nothing has expired and readers and
spenders skip the grants entirely; once it has passed, the balance a user sees subtracts what
has expired (`expired_remaining`), and the next debit of that profile sweeps it first
(`expire_locked`), writing one `expiry` entry per expired grant.
"""

from __future__ import annotations

from django.db import connections
from django.db.models import Case, F, Min, OuterRef, Q, Subquery, Sum, Value, When

from billing import signals
from billing.models import CreditGrant, GrantAllocation, LedgerEntry, Profile

# The drawdown order, the one definition (the PostgreSQL function billing_draw, installed by
# migration 0018, spells the same order in SQL; tests/test_ledger_sql.py and
# tests/test_grants_many.py hold the two together):
# soonest expiry first, never-expiring last; then promotional before paid ("promotional" sorts
# after "paid", so descending); then the oldest grant first.
DRAWDOWN_ORDER = (F("expires_at").asc(nulls_last=True), F("category").desc(), F("created_at").asc(), F("id").asc())


def lock_profile(alias: str, *, profile_id: int | None = None, user_id: int | None = None) -> Profile:
    """The profile's row, locked for the caller's transaction: the lock every writer of a
    profile's balance, grants and holds takes first. By user, the profile is made if missing."""
    locked = Profile.objects.using(alias).select_for_update(of=("self",)).select_related("user")
    if profile_id is not None:
        return locked.get(pk=profile_id)
    return locked.get_or_create(user_id=user_id)[0]


def own_grant_id(alias: str, payment_id: int) -> int | None:
    """The grant a payment's purchase opened (a refund draws on it first, a reinstatement refills it first)."""
    return CreditGrant.objects.using(alias).filter(payment_id=payment_id).values_list("pk", flat=True).first()


def open_grants(alias: str, profile_id: int, now):
    """The profile's grants that still hold credits and have not expired, in the drawdown order."""
    return (
        CreditGrant.objects.using(alias)
        .filter(profile_id=profile_id, remaining__gt=0)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by(*DRAWDOWN_ORDER)
    )


def draw(alias: str, profile_id: int, entry: LedgerEntry, amount: int, now, *, first_grant_id: int | None = None):
    """Take `amount` credits from the profile's open grants for the debit `entry`: the grant
    `first_grant_id` first when given (a refund takes from the payment's own grant), then the
    drawdown order. The balance has already been taken down by `amount`."""
    # Every open grant holds at least one credit, so `amount` grants always suffice: reading only
    # those keeps a debit's cost the same however many grants the profile holds open.
    grants = open_grants(alias, profile_id, now).values_list("id", "remaining")
    if first_grant_id is None:
        rows = list(grants[:amount])
    else:
        rows = list(grants.filter(pk=first_grant_id)) + list(grants.exclude(pk=first_grant_id)[:amount])
    left, allocations = amount, []
    for grant_id, remaining in rows:
        take = min(remaining, left)
        CreditGrant.objects.using(alias).filter(pk=grant_id).update(remaining=F("remaining") - take)
        allocations.append(GrantAllocation(entry=entry, grant_id=grant_id, amount=take))
        left -= take
        if left == 0:
            break
    if left:
        # The balance said the credits were there and the grants do not hold them: the books
        # disagree (audit_credits names how). Refuse rather than write a debit nothing covers.
        raise GrantsOutOfStep(f"the grants of profile {profile_id} hold {left} credits less than its balance")
    GrantAllocation.objects.using(alias).bulk_create(allocations)


def restore(alias: str, entry: LedgerEntry, amounts: dict[int, int]) -> None:
    """Put `amounts` (grant id -> credits) back into those grants for the reinstatement `entry`."""
    for grant_id, amount in amounts.items():
        CreditGrant.objects.using(alias).filter(pk=grant_id).update(remaining=F("remaining") + amount)
    GrantAllocation.objects.using(alias).bulk_create(
        GrantAllocation(entry=entry, grant_id=grant_id, amount=amount) for grant_id, amount in amounts.items()
    )


def taken_back(alias: str, payment_id: int) -> dict[int, int]:
    """What the payment's clawbacks took from each grant, less what its reinstatements gave back."""
    net: dict[int, int] = {}
    rows = (
        GrantAllocation.objects.using(alias)
        .filter(entry__payment_id=payment_id, entry__kind__in=CLAWBACK_KINDS + (LedgerEntry.Kind.REINSTATEMENT,))
        .values_list("grant_id", "entry__kind")
        .annotate(total=Sum("amount"))
    )
    for grant_id, kind, total in rows:
        net[grant_id] = net.get(grant_id, 0) + (-total if kind == LedgerEntry.Kind.REINSTATEMENT else total)
    return {grant_id: amount for grant_id, amount in net.items() if amount > 0}


CLAWBACK_KINDS = (LedgerEntry.Kind.REFUND, LedgerEntry.Kind.DISPUTE)


def expired_remaining(alias: str, *, user_id: int, now) -> int:
    """Credits of the user's grants that have expired and not been swept yet."""
    total = (
        CreditGrant.objects.using(alias)
        .filter(profile__user_id=user_id, remaining__gt=0, expires_at__lte=now)
        .aggregate(total=Sum("remaining"))["total"]
    )
    return total or 0


def expire_locked(alias: str, profile: Profile, now) -> int:
    """Sweep the profile's expired grants (its row is locked by the caller): one `expiry` entry
    per grant, its credits out of the balance, and the next expiry hint recomputed. Returns the
    credits expired (0 when nothing had). Running it again changes nothing: the grants are empty."""
    return expire_many_locked(alias, [profile.pk], now, users={profile.pk: profile.user})


def expire_many_locked(alias: str, profile_ids: list[int], now, *, users: dict | None = None) -> int:
    """`expire_locked` for many profiles at once (all their rows locked by the caller): the same
    entries, in a fixed number of statements however many profiles and grants there are, so a
    sweep of a hundred thousand profiles is a few hundred statements. `users` (profile id ->
    user), when the caller has them, saves loading them for the credits_expired signal."""
    if not profile_ids:
        return 0
    if connections[alias].vendor == "postgresql":
        return _expire_postgresql(alias, profile_ids, now, users)
    ids = list(profile_ids)
    expired = list(
        CreditGrant.objects.using(alias)
        .filter(profile_id__in=ids, remaining__gt=0, expires_at__lte=now)
        .order_by("profile_id", "expires_at", "id")
    )
    balances = dict(Profile.objects.using(alias).filter(pk__in=ids).values_list("pk", "credits"))
    entries = []
    for grant in expired:
        balances[grant.profile_id] -= grant.remaining
        entries.append(
            LedgerEntry(
                profile_id=grant.profile_id,
                delta=-grant.remaining,
                balance_after=balances[grant.profile_id],
                kind=LedgerEntry.Kind.EXPIRY,
                reason=f"{grant.remaining} {grant.get_category_display().lower()} credits expired",
                created_at=now,
            )
        )
    # In list order, so each profile's entries take ids in the order of their running balance.
    LedgerEntry.objects.using(alias).bulk_create(entries)
    GrantAllocation.objects.using(alias).bulk_create(
        GrantAllocation(entry=entry, grant=grant, amount=grant.remaining)
        for entry, grant in zip(entries, expired, strict=True)
    )
    users = users or _users(alias, {grant.profile_id for grant in expired})
    for entry, grant in zip(entries, expired, strict=True):
        signals.send_after_commit(
            signals.credits_expired,
            sender=Profile,
            using=alias,
            user=users[grant.profile_id],
            credits=grant.remaining,
            entry=entry,
            grant=grant,
        )
    if expired:
        CreditGrant.objects.using(alias).filter(pk__in=[grant.pk for grant in expired]).update(remaining=0)
    moved = {grant.profile_id for grant in expired}
    soonest = (
        CreditGrant.objects.using(alias)
        .filter(profile_id=OuterRef("pk"), remaining__gt=0, expires_at__isnull=False)
        .order_by()
        .values("profile_id")
        .annotate(soonest=Min("expires_at"))
        .values("soonest")
    )
    changes = {"next_expiry": Subquery(soonest)}
    if moved:
        changes["credits"] = Case(
            *(When(pk=pk, then=Value(balances[pk])) for pk in moved),
            default=F("credits"),
            output_field=Profile._meta.get_field("credits"),
        )
    Profile.objects.using(alias).filter(pk__in=ids).update(**changes)
    return sum(grant.remaining for grant in expired)


def _expire_postgresql(alias: str, profile_ids: list[int], now, users: dict | None) -> int:
    """The same sweep in one statement (postgresql.expire_postgresql): at a hundred thousand
    profiles, building model instances and ORM expressions in Python cost more than the SQL."""
    from billing.ledger.postgresql import expire_postgresql

    swept = expire_postgresql(alias, profile_ids, now)
    if swept and signals.credits_expired.receivers:
        entries = LedgerEntry.objects.using(alias).in_bulk([row[0] for row in swept])
        opened = CreditGrant.objects.using(alias).in_bulk([row[1] for row in swept])
        users = users or _users(alias, {row[2] for row in swept})
        for entry_id, grant_id, profile_id, credits in swept:
            signals.send_after_commit(
                signals.credits_expired,
                sender=Profile,
                using=alias,
                user=users[profile_id],
                credits=credits,
                entry=entries[entry_id],
                grant=opened[grant_id],
            )
    return sum(row[3] for row in swept)


def _users(alias: str, profile_ids) -> dict:
    """Profile id -> user, for the credits_expired signal."""
    profiles = Profile.objects.using(alias).select_related("user").in_bulk(list(profile_ids))
    return {pk: profile.user for pk, profile in profiles.items()}


class GrantsOutOfStep(RuntimeError):
    """A profile's grants do not cover its balance: the books were changed outside the ledger."""
