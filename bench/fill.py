"""Set-based bench data: users, their profiles and a ledger, in one INSERT statement.

Every profile gets the same pattern of entries: an opening grant, then spends of 1 credit with a
top-up of 5 every tenth entry; about 1% of the -1 entries are labelled adjustments and 0.1%
refunds (same delta), so the admin's filters meet common and rare kinds. `balance_after` is
the running sum (a window function) and the profile's `credits` is that pattern's total, so the
ledger invariant (docs/DESIGN.md) holds and `audit_credits` passes. Rows are only inserted, which the append-only
trigger allows. A million entries take seconds because PostgreSQL builds them from
`generate_series`, not Python.

The grants are what the ledger itself would have written (docs/DESIGN.md, "Credit grants"): each
credit opens a never-expiring promotional grant of its size, and each -1 entry draws its credit
from the opening grant (the oldest, so first in the drawdown order, and large enough for every
spend), recorded as one allocation. So the grants hold the balance and `audit_credits`' grant
checks pass on filled data too. `add_grants` gives filled profiles more open grants, for the
ledger bench's grant-aware figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.db import connection

FILL_SQL = """
WITH pattern AS (
    SELECT n, delta, kind, reason, sum(delta) OVER (ORDER BY n) AS balance_after
    FROM (
        SELECT n,
               CASE WHEN n = 1 THEN %(grant)s WHEN n %% 10 = 0 THEN 5 ELSE -1 END AS delta,
               -- 'grant' is the stored value of LedgerEntry.Kind.BONUS
               CASE WHEN n = 1 OR n %% 10 = 0 THEN 'grant' ELSE 'spend' END AS kind,
               CASE WHEN n = 1 THEN 'Opening grant' WHEN n %% 10 = 0 THEN 'Top-up' ELSE 'Fortune told' END AS reason
        FROM generate_series(1, %(entries)s) AS n
    ) AS steps
),
new_users AS (
    INSERT INTO {user} (password, is_superuser, first_name, last_name, is_staff, is_active, date_joined, email)
    SELECT '!bench-unusable', false, '', '', false, true, now(), %(prefix)s || g || '@example.com'
    FROM generate_series(%(first)s, %(last)s) AS g
    RETURNING id
),
new_profiles AS (
    INSERT INTO {profile} (user_id, credits, held, stripe_customer_id, created_at)
    SELECT id, (SELECT coalesce(sum(delta), 0) FROM pattern), 0, '', now() FROM new_users
    RETURNING id
),
entries AS (
    INSERT INTO {ledger} (profile_id, delta, balance_after, kind, reason, created_at)
    SELECT p.id, s.delta, s.balance_after,
       CASE WHEN s.kind <> 'spend' THEN s.kind
            WHEN (p.id + s.n) %% 1000 = 0 THEN 'refund'
            WHEN (p.id + s.n) %% 100 = 50 THEN 'adjustment'
            ELSE s.kind END,
       CASE WHEN s.kind <> 'spend' THEN s.reason
            WHEN (p.id + s.n) %% 1000 = 0 THEN 'Refund of a purchase'
            WHEN (p.id + s.n) %% 100 = 50 THEN 'Support correction'
            ELSE s.reason END,
       now() - (%(entries)s - s.n) * interval '1 minute'
    FROM pattern AS s CROSS JOIN new_profiles AS p
    WHERE %(entries)s > 0
    ORDER BY s.n, p.id
    RETURNING id, profile_id, delta, reason, created_at
),
grants AS (
    -- 'grant' (the source) and 'promotional': what Kind.BONUS opens.
    INSERT INTO {grant} (profile_id, category, source, amount, remaining, expires_at, payment_id, entry_id, created_at)
    SELECT profile_id, 'promotional', 'grant', delta,
           CASE WHEN reason = 'Opening grant' THEN delta - (SELECT count(*) FROM pattern WHERE delta = -1 AND n > 1)
                ELSE delta END,
           NULL, NULL, id, created_at
    FROM entries
    WHERE delta > 0
    ORDER BY id
    RETURNING id, entry_id
)
INSERT INTO {allocation} (entry_id, grant_id, amount)
SELECT spend.id, opening_grant.id, 1
FROM entries AS spend
JOIN entries AS opening ON opening.profile_id = spend.profile_id AND opening.reason = 'Opening grant'
JOIN grants AS opening_grant ON opening_grant.entry_id = opening.id
WHERE spend.delta < 0
ORDER BY spend.id
"""

# More open grants for each filled profile of a prefix, each opened by its own bonus entry (the
# ledger's rule): the odd ones promotional and expiring in 30 + k days, so the soonest of them
# is drawn first, the even ones paid and never expiring. The next-expiry hint follows.
ADD_GRANTS_SQL = """
WITH targets AS (
    SELECT p.id, p.credits
    FROM {profile} p JOIN {user} u ON u.id = p.user_id
    WHERE u.email LIKE %(prefix)s || '%%'
),
steps AS (
    SELECT t.id AS profile_id, k, t.credits + k * %(amount)s::bigint AS balance_after,
           CASE WHEN k %% 2 = 1 THEN now() + (30 + k) * interval '1 day' END AS expires_at
    FROM targets t CROSS JOIN generate_series(1, %(extra)s) AS k
),
moved AS (
    UPDATE {profile} p
    SET credits = p.credits + %(extra)s * %(amount)s::bigint,
        next_expiry = LEAST(p.next_expiry, (SELECT min(expires_at) FROM steps))
    FROM targets t WHERE t.id = p.id
),
entries AS (
    INSERT INTO {ledger} (profile_id, delta, balance_after, kind, reason, created_at)
    SELECT profile_id, %(amount)s::bigint, balance_after, 'grant', 'Bench grant ' || k, now()
    FROM steps
    ORDER BY k, profile_id
    RETURNING id, profile_id, reason, created_at
)
INSERT INTO {grant} (profile_id, category, source, amount, remaining, expires_at, payment_id, entry_id, created_at)
SELECT e.profile_id, CASE WHEN s.expires_at IS NULL THEN 'paid' ELSE 'promotional' END, 'grant',
       %(amount)s::bigint, %(amount)s::bigint, s.expires_at, NULL, e.id, e.created_at
FROM entries e JOIN steps s ON s.profile_id = e.profile_id AND e.reason = 'Bench grant ' || s.k
ORDER BY e.id
"""


# One promotional grant that has already expired for each of `profiles` filled profiles (of a
# prefix), opened by its own bonus entry an hour before its expiry, unswept: what
# `expire_credits` finds after a promotion ends. The next-expiry hint says it is due.
ADD_EXPIRED_SQL = """
WITH targets AS (
    SELECT p.id, p.credits
    FROM {profile} p JOIN {user} u ON u.id = p.user_id
    WHERE u.email LIKE %(prefix)s || '%%'
    ORDER BY p.id
    LIMIT %(profiles)s
),
moved AS (
    UPDATE {profile} p
    SET credits = p.credits + %(amount)s::bigint,
        next_expiry = LEAST(p.next_expiry, now() - interval '1 hour')
    FROM targets t WHERE t.id = p.id
),
entries AS (
    INSERT INTO {ledger} (profile_id, delta, balance_after, kind, reason, created_at)
    SELECT id, %(amount)s::bigint, credits + %(amount)s::bigint, 'grant', 'Bench promotion', now() - interval '2 hours'
    FROM targets
    ORDER BY id
    RETURNING id, profile_id, created_at
)
INSERT INTO {grant} (profile_id, category, source, amount, remaining, expires_at, payment_id, entry_id, created_at)
SELECT profile_id, 'promotional', 'grant', %(amount)s::bigint, %(amount)s::bigint, now() - interval '1 hour',
       NULL, id, created_at
FROM entries
ORDER BY id
"""


@dataclass
class Filled:
    users: int
    entries: int
    balance: int
    prefix: str
    insert_seconds: float

    def email(self, number: int) -> str:
        return f"{self.prefix}{number}@example.com"


def pattern_balance(entries: int, grant: int) -> int:
    """The balance each filled profile ends with (what FILL_SQL's running sum reaches)."""
    return sum(grant if n == 1 else 5 if n % 10 == 0 else -1 for n in range(1, entries + 1))


def fill(
    *,
    users: int,
    entries_per_user: int,
    prefix: str = "bench",
    grant: int | None = None,
    chunk_users: int = 10_000,
    log=None,
) -> Filled:
    """Insert `users` users (emails `<prefix><n>@example.com`), each with a profile and
    `entries_per_user` ledger entries; then VACUUM ANALYZE the tables, as autovacuum would.

    Users are inserted `chunk_users` at a time (one statement, one transaction each), so no
    statement holds more than about a million new rows in memory, and `log` hears of each chunk."""
    if connection.vendor != "postgresql":
        raise RuntimeError("bench data is generated with PostgreSQL's generate_series")
    grant = grant if grant is not None else max(entries_per_user, 100)
    if grant < entries_per_user:
        raise ValueError("the opening grant must cover the spends so no balance goes below zero")
    sql = FILL_SQL.format(**_tables())
    began = time.perf_counter()
    with connection.cursor() as cursor:
        for first in range(1, users + 1, chunk_users):
            last = min(users, first + chunk_users - 1)
            cursor.execute(
                sql,
                {"first": first, "last": last, "entries": entries_per_user, "grant": grant, "prefix": prefix},
            )
            if log is not None and users > chunk_users:
                log(
                    f"fill {prefix}: {last:,} of {users:,} users, {last * entries_per_user:,} entries "
                    f"({time.perf_counter() - began:.0f} s)"
                )
    inserted = time.perf_counter() - began
    vacuum_analyze()
    return Filled(users, users * entries_per_user, pattern_balance(entries_per_user, grant), prefix, inserted)


def add_grants(*, prefix: str, extra: int, amount: int) -> None:
    """Open `extra` more grants of `amount` credits for every filled profile whose email starts
    with `prefix` (bench.ledger_throughput's profiles with 3 and 100 open grants)."""
    with connection.cursor() as cursor:
        cursor.execute(ADD_GRANTS_SQL.format(**_tables()), {"prefix": prefix, "extra": extra, "amount": amount})
    vacuum_analyze()


def add_expired_grants(*, prefix: str, profiles: int, amount: int) -> int:
    """Give up to `profiles` filled profiles of `prefix` one expired, unswept grant of `amount`
    credits each (bench.scale_bench times `expire_credits` over them); returns how many."""
    with connection.cursor() as cursor:
        cursor.execute(ADD_EXPIRED_SQL.format(**_tables()), {"prefix": prefix, "profiles": profiles, "amount": amount})
        added = cursor.rowcount
    vacuum_analyze(*(_tables()[t] for t in ("profile", "grant")))
    return added


def _tables() -> dict[str, str]:
    from accounts.models import User
    from billing.models import CreditGrant, GrantAllocation, LedgerEntry, Profile

    return {
        "user": User._meta.db_table,
        "profile": Profile._meta.db_table,
        "ledger": LedgerEntry._meta.db_table,
        "grant": CreditGrant._meta.db_table,
        "allocation": GrantAllocation._meta.db_table,
    }


def vacuum_analyze(*tables: str) -> None:
    names = _tables()
    tables = tables or tuple(names[t] for t in ("user", "profile", "ledger", "grant", "allocation"))
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(table)}")
