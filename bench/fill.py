"""Set-based bench data: users, their profiles and a ledger, in one INSERT statement.

Every profile gets the same pattern of entries: an opening grant, then spends of 1 credit with a
top-up of 5 every tenth entry; about 1% of the -1 entries are labelled adjustments and 0.1%
refunds (same delta), so the admin's filters meet common and rare kinds. `balance_after` is
the running sum (a window function) and the profile's `credits` is that pattern's total, so the
ledger invariant (docs/DESIGN.md) holds and `audit_credits` passes. Rows are only inserted, which the append-only
trigger allows. A million entries take seconds because PostgreSQL builds them from
`generate_series`, not Python.
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
    FROM generate_series(1, %(users)s) AS g
    RETURNING id
),
new_profiles AS (
    INSERT INTO {profile} (user_id, credits, stripe_customer_id, created_at)
    SELECT id, (SELECT coalesce(sum(delta), 0) FROM pattern), '', now() FROM new_users
    RETURNING id
)
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


def fill(*, users: int, entries_per_user: int, prefix: str = "bench", grant: int | None = None) -> Filled:
    """Insert `users` users (emails `<prefix><n>@example.com`), each with a profile and
    `entries_per_user` ledger entries; then VACUUM ANALYZE the tables, as autovacuum would."""
    from accounts.models import User
    from billing.models import LedgerEntry, Profile

    if connection.vendor != "postgresql":
        raise RuntimeError("bench data is generated with PostgreSQL's generate_series")
    grant = grant if grant is not None else max(entries_per_user, 100)
    if grant < entries_per_user:
        raise ValueError("the opening grant must cover the spends so no balance goes below zero")
    sql = FILL_SQL.format(user=User._meta.db_table, profile=Profile._meta.db_table, ledger=LedgerEntry._meta.db_table)
    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(sql, {"users": users, "entries": entries_per_user, "grant": grant, "prefix": prefix})
    inserted = time.perf_counter() - began
    vacuum_analyze()
    return Filled(users, users * entries_per_user, pattern_balance(entries_per_user, grant), prefix, inserted)


def vacuum_analyze(*tables: str) -> None:
    from accounts.models import User
    from billing.models import LedgerEntry, Profile

    tables = tables or (User._meta.db_table, Profile._meta.db_table, LedgerEntry._meta.db_table)
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(table)}")
