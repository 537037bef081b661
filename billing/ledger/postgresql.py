"""The balance write on PostgreSQL: the UPDATE and the INSERT are one statement.

    WITH u AS (UPDATE billing_profile SET credits = credits + %s
               WHERE user_id = %s AND credits + %s >= 0 RETURNING id, credits)
    INSERT INTO billing_ledgerentry (...) SELECT u.id, ..., u.credits FROM u RETURNING id

One round trip instead of three (update, read back, insert): the balance and its row still change
atomically, and the UPDATE's row lock still serialises writers to one profile. Called outside any
transaction (autocommit), that statement is sent alone, without BEGIN/COMMIT: a single statement
is its own transaction in PostgreSQL, all or nothing (a failed INSERT undoes its UPDATE), committed
before it returns. That saves two more round trips and, on a hot profile, releases the row lock
as soon as the statement commits instead of a round trip later. Inside a caller's transaction it
runs under a savepoint, so a lost idempotency race leaves the caller's transaction usable. The
statement is prepared once per connection (BILLING_LEDGER_PREPARED_STATEMENTS), so PostgreSQL
does not parse and plan the CTE on every call. docs/BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import functools

from django.db import connections

from billing.conf import app_settings
from billing.models import LedgerEntry, Profile

_PG_SQL = """
WITH u AS (
    UPDATE {profile} SET credits = credits + %(delta)s
    WHERE user_id = %(user_id)s AND credits + %(delta)s >= 0
    RETURNING id, credits
)
INSERT INTO {ledger} (profile_id, delta, balance_after, kind, reason, actor_id, payment_id, idempotency_key, created_at)
SELECT u.id, %(delta)s, u.credits, %(kind)s, %(reason)s, %(actor_id)s, %(payment_id)s, %(idempotency_key)s, %(now)s
FROM u
RETURNING id, profile_id, balance_after
"""


@functools.cache
def _pg_sql() -> str:
    return _PG_SQL.format(profile=Profile._meta.db_table, ledger=LedgerEntry._meta.db_table)


_PREPARE_ONLY_ON_REQUEST = 2**31 - 1


def write_postgresql(alias: str, user_id: int, fields: dict, now) -> LedgerEntry | None:
    """Move the balance by `fields["delta"]` and append its entry in one statement; None when the
    conditional UPDATE matched no row. The caller supplies the transaction (autocommit or atomic)."""
    connection = connections[alias]
    params = {**fields, "user_id": user_id, "now": now}
    if app_settings.BILLING_LEDGER_PREPARED_STATEMENTS and not connection.queries_logged:
        # A server-side prepared statement: PostgreSQL parses and plans the CTE once per
        # connection instead of on every call, the largest cost left once the round trips are
        # gone (docs/BENCHMARKS.md). Django's cursor binds parameters client-side and cannot
        # prepare, so this one statement goes through psycopg directly, inside Django's error
        # translation (an IntegrityError stays django.db.IntegrityError). When queries are being
        # logged (DEBUG, assertNumQueries) it takes Django's cursor so the log stays complete.
        from psycopg import Cursor  # the PostgreSQL backend's driver (Django 5.2: psycopg 3)

        connection.ensure_connection()
        raw = connection.connection
        if raw.prepare_threshold is None:
            # Django turns psycopg's preparing off (prepare_threshold=None) unless OPTIONS set
            # it, which also ignores prepare=True. Its own cursors bind client-side and never
            # prepare, so a threshold nothing reaches enables exactly the statements that ask.
            raw.prepare_threshold = _PREPARE_ONLY_ON_REQUEST
        with connection.wrap_database_errors, Cursor(raw) as cursor:
            cursor.execute(_pg_sql(), params, prepare=True)
            row = cursor.fetchone()
    else:
        with connection.cursor() as cursor:
            cursor.execute(_pg_sql(), params)
            row = cursor.fetchone()
    if row is None:
        return None
    entry_id, profile_id, balance_after = row
    # The stored row, built as a query would load it (from_db takes every column in order, and
    # is much cheaper than keyword construction on this hot path).
    values = {**fields, "id": entry_id, "profile_id": profile_id, "balance_after": balance_after, "created_at": now}
    return LedgerEntry.from_db(alias, None, [values[f.attname] for f in LedgerEntry._meta.concrete_fields])
