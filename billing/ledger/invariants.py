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

from billing.models import CreditGrant, GrantAllocation, Hold, LedgerEntry, Profile


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


# --- grants (docs/DESIGN.md, "Credit grants") ------------------------------------------------


class GrantProblem(NamedTuple):
    profile_id: int
    problem: str  # what is wrong, in words, naming the rows


# Ledger entries written before credit grants existed (before the migration that turned each
# balance into a grant was applied) draw on no grant and open none: the checks of entries start
# after it. django_migrations records when it ran.
_GRANTS_SINCE = """
COALESCE((SELECT applied FROM django_migrations WHERE app = 'billing' AND name = '0009_balances_become_grants'),
    e.created_at)
"""

_GRANT_SQL = {
    # The balance is the sum of what the profile's grants hold.
    "balance": """
SELECT p.id, 'credits ' || p.credits || ' but its grants hold ' || COALESCE(g.held, 0)
FROM {profile} p
LEFT JOIN (SELECT profile_id, SUM(remaining) AS held FROM {grant} GROUP BY profile_id) g ON g.profile_id = p.id
WHERE p.credits <> COALESCE(g.held, 0)
""",
    # Each debit's draws add up to it; each credit opens one grant of its size (a reinstatement
    # refills grants instead, and opens one only for what it cannot put back).
    "entry": """
SELECT e.profile_id, 'entry ' || e.id || ' (' || e.kind || ' ' || e.delta || ') moves '
    || (COALESCE(a.drawn, 0) + COALESCE(g.amount, 0)) || ' credits of grants'
FROM {ledger} e
LEFT JOIN (SELECT entry_id, SUM(amount) AS drawn FROM {allocation} GROUP BY entry_id) a ON a.entry_id = e.id
LEFT JOIN {grant} g ON g.entry_id = e.id
WHERE e.created_at >= {since}
  AND ((e.delta < 0 AND (COALESCE(a.drawn, 0) <> -e.delta OR g.id IS NOT NULL))
    OR (e.delta > 0 AND COALESCE(a.drawn, 0) + COALESCE(g.amount, 0) <> e.delta))
""",
    # What a grant holds is what it opened with, less every draw, plus every refill.
    "remaining": """
SELECT g.profile_id, 'grant ' || g.id || ' holds ' || g.remaining || ' but its history leaves '
    || (g.amount + COALESCE(m.moved, 0))
FROM {grant} g
LEFT JOIN (
    SELECT a.grant_id, SUM(CASE WHEN e.delta < 0 THEN -a.amount ELSE a.amount END) AS moved
    FROM {allocation} a JOIN {ledger} e ON e.id = a.entry_id
    GROUP BY a.grant_id
) m ON m.grant_id = g.id
WHERE g.remaining <> g.amount + COALESCE(m.moved, 0)
""",
    # Nothing is drawn from a grant at or after its expiry, but by the expiry itself.
    "expired": """
SELECT g.profile_id, 'entry ' || e.id || ' (' || e.kind || ') drew ' || a.amount || ' from grant ' || g.id
    || ' after it expired'
FROM {allocation} a
JOIN {grant} g ON g.id = a.grant_id
JOIN {ledger} e ON e.id = a.entry_id
WHERE e.delta < 0 AND e.kind <> 'expiry' AND g.expires_at IS NOT NULL AND e.created_at >= g.expires_at
""",
    # The next-expiry hint is never later than an open grant's expiry (else expired credits
    # would look spendable until a sweep).
    "hint": """
SELECT p.id, 'next expiry hint ' || COALESCE(CAST(p.next_expiry AS TEXT), 'none')
    || ' is later than an open grant''s expiry ' || CAST(g.soonest AS TEXT)
FROM {profile} p
JOIN (
    SELECT profile_id, MIN(expires_at) AS soonest FROM {grant}
    WHERE remaining > 0 AND expires_at IS NOT NULL GROUP BY profile_id
) g ON g.profile_id = p.id
WHERE p.next_expiry IS NULL OR p.next_expiry > g.soonest
""",
}


def grant_problems(using: str | None = None) -> list[GrantProblem]:
    """Every way the grants disagree with the ledger, set-based (one pass per check), ordered by
    profile; none when the books are sound."""
    tables = {
        "profile": Profile._meta.db_table,
        "ledger": LedgerEntry._meta.db_table,
        "grant": CreditGrant._meta.db_table,
        "allocation": GrantAllocation._meta.db_table,
        "since": _GRANTS_SINCE.strip(),
    }
    found = []
    with connections[using or router.db_for_read(LedgerEntry)].cursor() as cursor:
        for sql in _GRANT_SQL.values():
            cursor.execute(sql.format(**tables))
            found += [GrantProblem(*row) for row in cursor.fetchall()]
    return sorted(found)


# --- holds (docs/DESIGN.md, "Holds") -----------------------------------------------------------

_HOLD_SQL = """
SELECT p.id, 'held ' || p.held || ' but its active holds reserve ' || COALESCE(h.reserved, 0)
FROM {profile} p
LEFT JOIN (SELECT profile_id, SUM(amount) AS reserved FROM {hold} WHERE status = 'active' GROUP BY profile_id) h
    ON h.profile_id = p.id
WHERE p.held <> COALESCE(h.reserved, 0)
"""


def hold_problems(using: str | None = None) -> list[GrantProblem]:
    """Profiles whose reserved credits (`held`) are not what their active holds add up to."""
    sql = _HOLD_SQL.format(profile=Profile._meta.db_table, hold=Hold._meta.db_table)
    with connections[using or router.db_for_read(LedgerEntry)].cursor() as cursor:
        cursor.execute(sql)
        return sorted(GrantProblem(*row) for row in cursor.fetchall())
