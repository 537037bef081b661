"""The balance write through the ORM, for databases other than PostgreSQL (SQLite).

An F() update, a read-back and an insert, in one transaction: SQLite's IMMEDIATE transactions
hold the write lock for all three. bench/ also measures it on PostgreSQL, as the naive ORM form
the one-statement path (postgresql.py) is compared with.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import F

from billing.models import LedgerEntry, Profile


def write_portable(alias: str, user_id: int, fields: dict, now) -> LedgerEntry | None:
    """Move the balance by `fields["delta"]` and append its entry, in one transaction; None when
    the balance is short or there is no profile (nothing changed)."""
    with transaction.atomic(using=alias):
        updated = (
            Profile.objects.using(alias)
            .filter(user_id=user_id, credits__gte=-fields["delta"])
            .update(credits=F("credits") + fields["delta"])
        )
        if not updated:
            return None
        profile_id, balance = Profile.objects.using(alias).filter(user_id=user_id).values_list("id", "credits").get()
        return LedgerEntry.objects.using(alias).create(
            profile_id=profile_id, balance_after=balance, created_at=now, **fields
        )
