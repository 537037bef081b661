"""The ledger invariant, defined once: audit_credits prints it, tests and reliability/ assert it.

For every profile, `credits == sum(delta)` of its ledger entries (0 when it has none), and the
newest entry's `balance_after == credits`. One set-based query checks it (a single GROUP BY pass
over the ledger, then a join by primary key to each profile's newest entry), so the time grows
with one scan of the table, never with one query per user. Balances and `balance_after` below
zero are not looked for here: CHECK constraints refuse them when written (billing/models.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from django.contrib.auth import get_user_model
from django.db import connections, router

from billing.models import LedgerEntry, Profile


class BrokenProfile(NamedTuple):
    profile_id: int
    login: str  # the user's USERNAME_FIELD
    credits: int
    ledger_sum: int
    newest_balance_after: int | None  # None when the profile has no entries


_BROKEN_SQL = """
SELECT p.id, u.{login}, p.credits, COALESCE(l.total, 0), newest.balance_after
FROM {profile} p
JOIN {user} u ON u.{user_pk} = p.user_id
LEFT JOIN (
    SELECT profile_id, SUM(delta) AS total, MAX(id) AS newest_id
    FROM {ledger}
    GROUP BY profile_id
) l ON l.profile_id = p.id
LEFT JOIN {ledger} newest ON newest.id = l.newest_id
WHERE p.credits <> COALESCE(l.total, 0)
   OR newest.balance_after <> p.credits
ORDER BY p.id
"""

# Entries of one profile are written under its row lock, so id order is commit order and each
# entry's balance_after is the sum of its profile's deltas up to it.
_OFF_RUNNING_SUM_SQL = """
SELECT COUNT(*) FROM (
    SELECT balance_after, SUM(delta) OVER (PARTITION BY profile_id ORDER BY id) AS running
    FROM {ledger}
) t
WHERE balance_after <> running
"""


def broken_profiles(using: str | None = None) -> Iterator[BrokenProfile]:
    """Every profile that breaks the invariant, in profile id order; none when the ledger is sound."""
    User = get_user_model()
    sql = _BROKEN_SQL.format(
        login=User._meta.get_field(User.USERNAME_FIELD).column,
        user_pk=User._meta.pk.column,
        profile=Profile._meta.db_table,
        user=User._meta.db_table,
        ledger=LedgerEntry._meta.db_table,
    )
    with connections[using or router.db_for_read(LedgerEntry)].cursor() as cursor:
        cursor.execute(sql)
        while rows := cursor.fetchmany(1000):
            yield from (BrokenProfile(*row) for row in rows)


def entries_off_running_sum(using: str | None = None) -> int:
    """How many entries have a `balance_after` other than their profile's running sum of deltas
    (the whole history, not just the newest entry: one window pass over the ledger)."""
    with connections[using or router.db_for_read(LedgerEntry)].cursor() as cursor:
        cursor.execute(_OFF_RUNNING_SUM_SQL.format(ledger=LedgerEntry._meta.db_table))
        return cursor.fetchone()[0]
