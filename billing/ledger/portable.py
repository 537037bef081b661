"""The balance writes through the ORM, for databases other than PostgreSQL (SQLite), and for the
rare operations that run under an explicit profile lock on any database (clawbacks, reinstatements).

A conditional F() update, a read-back, the entry, and the grants it opens, draws on or refills,
in one transaction: SQLite's IMMEDIATE transactions hold the write lock for all of it, and on
PostgreSQL the UPDATE takes the profile's row lock first. bench/ also measures it on PostgreSQL, as
the naive ORM form the one-statement path (postgresql.py) is compared with.
"""

from __future__ import annotations

from django.db import models, transaction
from django.db.models import Case, F, Q, Value, When

from billing.ledger import grants
from billing.models import CreditGrant, LedgerEntry, Profile


def write_portable(alias: str, user_id: int, fields: dict, now, grant: dict | None = None) -> LedgerEntry | None:
    """Credit (a positive delta, into the new grant `grant`) or debit (drawn in the drawdown order)."""
    if fields["delta"] > 0:
        return credit_portable(alias, user_id, fields, now, grant=grant)
    return debit_portable(alias, user_id, fields, now)


def credit_portable(
    alias: str,
    user_id: int,
    fields: dict,
    now,
    *,
    grant: dict | None = None,
    restore: dict[int, int] | None = None,
    profile_id: int | None = None,
) -> LedgerEntry | None:
    """Add `fields["delta"]` credits: back into existing grants (`restore`, grant id -> credits)
    and the rest into a new grant (`grant`: category, source, expires_at). None when the user
    has no profile (nothing changed)."""
    delta = fields["delta"]
    restore = restore or {}
    opened = delta - sum(restore.values())
    with transaction.atomic(using=alias):
        expiries = [grant["expires_at"]] if grant and opened and grant["expires_at"] else []
        if restore:
            refilled = CreditGrant.objects.using(alias).filter(pk__in=restore, expires_at__isnull=False)
            expiries += list(refilled.values_list("expires_at", flat=True))
        changes = {"credits": F("credits") + delta}
        if expiries:
            soonest = Value(min(expiries), output_field=models.DateTimeField())
            changes["next_expiry"] = Case(
                When(Q(next_expiry__isnull=True) | Q(next_expiry__gt=soonest), then=soonest),
                default=F("next_expiry"),
            )
        profiles = Profile.objects.using(alias).filter(pk=profile_id) if profile_id else None
        profiles = profiles if profiles is not None else Profile.objects.using(alias).filter(user_id=user_id)
        if not profiles.update(**changes):
            return None
        profile_id, balance = profiles.values_list("id", "credits").get()
        entry = LedgerEntry.objects.using(alias).create(
            profile_id=profile_id, balance_after=balance, created_at=now, **fields
        )
        if restore:
            grants.restore(alias, entry, restore)
        if opened:
            CreditGrant.objects.using(alias).create(
                profile_id=profile_id,
                category=grant["category"],
                source=grant["source"],
                amount=opened,
                remaining=opened,
                expires_at=grant["expires_at"],
                payment_id=fields["payment_id"] if grant["source"] == CreditGrant.Source.PURCHASE else None,
                entry=entry,
                created_at=now,
            )
        return entry


def debit_portable(
    alias: str, user_id: int, fields: dict, now, *, first_grant_id: int | None = None, ignore_holds: bool = False
):
    """Take `-fields["delta"]` credits and draw them from the grants; None when the available
    balance (credits not reserved by holds, unless `ignore_holds`: a clawback takes what is
    there) is short, credits expired since the last sweep, or there is no profile."""
    amount = -fields["delta"]
    with transaction.atomic(using=alias):
        profiles = Profile.objects.using(alias).filter(user_id=user_id)
        updated = (
            profiles.filter(credits__gte=amount if ignore_holds else F("held") + amount)
            .filter(Q(next_expiry__isnull=True) | Q(next_expiry__gt=now))
            .update(credits=F("credits") - amount)
        )
        if not updated:
            return None
        profile_id, balance = profiles.values_list("id", "credits").get()
        entry = LedgerEntry.objects.using(alias).create(
            profile_id=profile_id, balance_after=balance, created_at=now, **fields
        )
        grants.draw(alias, profile_id, entry, amount, now, first_grant_id=first_grant_id)
        return entry
