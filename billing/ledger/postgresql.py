"""The balance writes on PostgreSQL: each one statement, one round trip.

- A credit is one statement of data-modifying CTEs: the conditional UPDATE of the balance (and
  of the profile's next-expiry hint), the ledger INSERT, and the INSERT of the grant it opens.
  Nothing in it reads grants, so nothing can be read from a stale snapshot.
- A purchase Stripe reports succeeded is the credit's statement with one more CTE in front: the
  payment's conditional UPDATE to succeeded, on which the rest depends (`credit_purchase`).
- A debit is one call of the PL/pgSQL function `billing_spend` (migration 0018): the conditional
  UPDATE (which takes the profile's row lock), the ledger INSERT (with the staff note since migration
  0027), then the draws from the grants in the drawdown order, each read after the lock was won.

The balance and its rows change atomically, and the UPDATE's row lock serialises writers to one
profile. Called outside any transaction (autocommit), the statement is sent alone, without
BEGIN/COMMIT: a single statement is its own transaction in PostgreSQL, all or nothing (a failed
INSERT undoes its UPDATE), committed before it returns, which also releases a hot profile's row
lock a round trip sooner. Inside a caller's transaction it runs under a savepoint, so a lost
idempotency race leaves the caller's transaction usable. Each statement is prepared once per
connection (BILLING_LEDGER_PREPARED_STATEMENTS), so PostgreSQL does not parse and plan it on every
call. docs/BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import functools

from django.db import connections

from billing.conf import app_settings
from billing.models import CreditGrant, GrantAllocation, Hold, LedgerEntry, Payment, PaymentNotice, Profile

_CREDIT_SQL = """
WITH u AS (
    UPDATE {profile} SET credits = credits + %(delta)s,
        next_expiry = LEAST(next_expiry, %(expires_at)s::timestamptz)
    WHERE user_id = %(user_id)s
    RETURNING id, credits
), e AS (
    INSERT INTO {ledger}
        (profile_id, delta, balance_after, kind, reason, staff_note, actor_id, payment_id, idempotency_key, created_at)
    SELECT u.id, %(delta)s, u.credits, %(kind)s, %(reason)s, %(staff_note)s, %(actor_id)s, %(payment_id)s,
        %(idempotency_key)s, %(now)s
    FROM u
    RETURNING id, profile_id, balance_after
), g AS (
    INSERT INTO {grant} (profile_id, category, source, amount, remaining, expires_at, payment_id, entry_id, created_at)
    SELECT e.profile_id, %(category)s, %(source)s, %(delta)s, %(delta)s, %(expires_at)s::timestamptz,
        %(grant_payment_id)s, e.id, %(now)s
    FROM e
)
SELECT id, profile_id, balance_after FROM e
"""

# A purchase Stripe reports succeeded: the payment marked succeeded (while it is still open and
# nothing was refunded or disputed) and the credit, in one statement. The payment's UPDATE comes
# first and the balance moves only when it matched, so the payment row's lock, taken by that
# UPDATE and re-checked against the latest row by PostgreSQL when another path changed it
# meanwhile, decides; a profile that does not exist yet leaves the payment alone too.
_PURCHASE_SQL = """
WITH p AS (
    UPDATE {payment} SET status = %(succeeded)s, stripe_payment_intent_id = %(intent_id)s,
        failure_message = '', failure_code = '', needs_attention = '', updated_at = %(now)s,
        card_brand = COALESCE(%(card_brand)s, card_brand), card_last4 = COALESCE(%(card_last4)s, card_last4)
    WHERE id = %(payment_id)s AND status = ANY(%(open_statuses)s::text[])
        AND (stripe_payment_intent_id IS NULL OR stripe_payment_intent_id = %(intent_id)s)
        AND amount_refunded = 0 AND amount_disputed = 0 AND credits_clawed_back = 0 AND credits_unrecovered = 0
        AND EXISTS (SELECT 1 FROM {profile} WHERE user_id = %(user_id)s)
    RETURNING id
), u AS (
    UPDATE {profile} SET credits = credits + %(delta)s,
        next_expiry = LEAST(next_expiry, %(expires_at)s::timestamptz)
    WHERE user_id = %(user_id)s AND EXISTS (SELECT 1 FROM p)
    RETURNING id, credits, held, next_expiry, next_hold_expiry
), e AS (
    INSERT INTO {ledger}
        (profile_id, delta, balance_after, kind, reason, actor_id, payment_id, idempotency_key, created_at)
    SELECT u.id, %(delta)s, u.credits, %(kind)s, %(reason)s, %(actor_id)s, %(payment_id)s, %(idempotency_key)s, %(now)s
    FROM u
    RETURNING id, profile_id, balance_after
), g AS (
    INSERT INTO {grant} (profile_id, category, source, amount, remaining, expires_at, payment_id, entry_id, created_at)
    SELECT e.profile_id, %(category)s, %(source)s, %(delta)s, %(delta)s, %(expires_at)s::timestamptz,
        %(payment_id)s, e.id, %(now)s
    FROM e
), n AS (
    INSERT INTO {notice} (payment_id, kind, refunded_through, amount, created_at)
    SELECT %(payment_id)s, 'receipt', 0, %(receipt_amount)s::integer, %(now)s
    FROM e WHERE %(receipt_amount)s::integer IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT e.id, e.profile_id, e.balance_after, u.held, u.next_expiry, u.next_hold_expiry FROM e, u
"""

# billing_draw is installed by migration 0018 (its docstring has the steps); billing_spend by
# 0018, with the staff note since 0027.
_DEBIT_SQL = """
SELECT entry_id, profile_id, balance_after FROM billing_spend(
    %(user_id)s::bigint, %(amount)s::bigint, %(kind)s::text, %(reason)s::text, %(actor_id)s::bigint,
    %(payment_id)s::bigint, %(idempotency_key)s::text, %(now)s::timestamptz, %(staff_note)s::text
)
"""


_HOLD_SQL = """
WITH u AS (
    UPDATE {profile} SET held = held + %(amount)s,
        next_hold_expiry = LEAST(next_hold_expiry, %(expires_at)s::timestamptz)
    WHERE user_id = %(user_id)s AND credits - held >= %(amount)s
        AND (next_expiry IS NULL OR next_expiry > %(now)s::timestamptz)
    RETURNING id
)
INSERT INTO {hold} (profile_id, amount, captured, status, reason, expires_at, idempotency_key, created_at)
SELECT u.id, %(amount)s, 0, 'active', %(reason)s, %(expires_at)s::timestamptz, %(idempotency_key)s, %(now)s
FROM u
RETURNING id, profile_id
"""

# billing_capture is installed by migration 0018 (its docstring has the steps).
_CAPTURE_SQL = """
SELECT entry_id, profile_id, balance_after FROM billing_capture(
    %(hold_id)s::bigint, %(amount)s::bigint, %(reason)s::text, %(idempotency_key)s::text, %(now)s::timestamptz
)
"""


@functools.cache
def _hold_sql() -> str:
    return _HOLD_SQL.format(profile=Profile._meta.db_table, hold=Hold._meta.db_table)


@functools.cache
def _purchase_sql() -> str:
    return _PURCHASE_SQL.format(
        payment=Payment._meta.db_table,
        profile=Profile._meta.db_table,
        ledger=LedgerEntry._meta.db_table,
        grant=CreditGrant._meta.db_table,
        notice=PaymentNotice._meta.db_table,
    )


@functools.cache
def _credit_sql() -> str:
    return _CREDIT_SQL.format(
        profile=Profile._meta.db_table, ledger=LedgerEntry._meta.db_table, grant=CreditGrant._meta.db_table
    )


_PREPARE_ONLY_ON_REQUEST = 2**31 - 1


def credit_postgresql(alias: str, user_id: int, fields: dict, now, grant: dict) -> LedgerEntry | None:
    """Add `fields["delta"]` credits in a new grant and append the entry, in one statement (the
    grant and the profile's next-expiry hint with them); None when there is no profile."""
    params = {
        **fields,
        **grant,
        "user_id": user_id,
        "now": now,
        "grant_payment_id": fields["payment_id"] if grant["source"] == CreditGrant.Source.PURCHASE else None,
    }
    return _entry(alias, fields, now, execute_prepared(alias, _credit_sql(), params))


def purchase_postgresql(alias: str, user_id: int, fields: dict, now, grant: dict, payment: dict):
    """Mark the payment succeeded and credit it, in one statement: (the entry, (held,
    next_expiry, next_hold_expiry) of the profile after it), or None when the payment was not
    open as `payment` (intent_id, open_statuses, succeeded) requires, or the user has no
    profile (nothing changed)."""
    params = {**fields, **grant, **payment, "user_id": user_id, "now": now}
    row = execute_prepared(alias, _purchase_sql(), params)
    if row is None:
        return None
    return _entry(alias, fields, now, row[:3]), row[3:]


def debit_postgresql(alias: str, user_id: int, fields: dict, now) -> LedgerEntry | None:
    """Take `-fields["delta"]` credits, draw them from the grants, append the entry: one call of
    billing_spend. None when the balance is short, credits expired since the last sweep, or
    there is no profile (nothing changed)."""
    params = {**fields, "user_id": user_id, "amount": -fields["delta"], "now": now}
    return _entry(alias, fields, now, execute_prepared(alias, _DEBIT_SQL, params))


def hold_postgresql(alias: str, user_id: int, fields: dict):
    """Reserve `fields["amount"]` credits and record the hold in one statement; None when fewer
    are available, credits expired since the last sweep, or there is no profile."""
    row = execute_prepared(alias, _hold_sql(), {**fields, "user_id": user_id})
    if row is None:
        return None
    hold_id, profile_id = row
    values = {
        "id": hold_id,
        "profile_id": profile_id,
        "amount": fields["amount"],
        "captured": 0,
        "status": Hold.Status.ACTIVE,
        "reason": fields["reason"],
        "expires_at": fields["expires_at"],
        "idempotency_key": fields["idempotency_key"],
        "entry_id": None,
        "created_at": fields["now"],
        "ended_at": None,
    }
    return Hold.from_db(alias, None, [values[f.attname] for f in Hold._meta.concrete_fields])


def capture_postgresql(alias: str, hold_id: int, amount: int, reason: str, key: str, now):
    """Settle an active, unexpired hold in one call of billing_capture: (the capture entry or
    None when nothing was used,) or None when the hold needs the slow path."""
    params = {"hold_id": hold_id, "amount": amount, "reason": reason, "idempotency_key": key, "now": now}
    row = execute_prepared(alias, _CAPTURE_SQL, params)
    if row is None:
        return None
    if row[0] is None:
        return (None,)
    return (_entry(alias, capture_fields(amount, reason, key), now, row),)


def capture_fields(amount: int, reason: str, key: str) -> dict:
    """The ledger entry of a hold's capture, as both capture paths write it."""
    return {
        "delta": -amount,
        "kind": LedgerEntry.Kind.CAPTURE,
        "reason": reason,
        "staff_note": "",
        "actor_id": None,
        "payment_id": None,
        "idempotency_key": key,
    }


def execute_prepared(alias: str, sql: str, params):
    """Run `sql` and fetch its one row, as a server-side prepared statement where the settings
    allow (BILLING_LEDGER_PREPARED_STATEMENTS). Also used for the webhook store's statement."""
    connection = connections[alias]
    if app_settings.BILLING_LEDGER_PREPARED_STATEMENTS and not connection.queries_logged:
        # A server-side prepared statement: PostgreSQL parses and plans it once per connection
        # instead of on every call, the largest cost left once the round trips are gone
        # (docs/BENCHMARKS.md). Django's cursor binds parameters client-side and cannot prepare,
        # so this one statement goes through psycopg directly, inside Django's error translation
        # (an IntegrityError stays django.db.IntegrityError). When queries are being logged
        # (DEBUG, assertNumQueries) it takes Django's cursor so the log stays complete.
        from psycopg import Cursor  # the PostgreSQL backend's driver (Django 5.2: psycopg 3)

        connection.ensure_connection()
        raw = connection.connection
        if raw.prepare_threshold is None:
            # Django turns psycopg's preparing off (prepare_threshold=None) unless OPTIONS set
            # it, which also ignores prepare=True. Its own cursors bind client-side and never
            # prepare, so a threshold nothing reaches enables exactly the statements that ask.
            raw.prepare_threshold = _PREPARE_ONLY_ON_REQUEST
        with connection.wrap_database_errors, Cursor(raw) as cursor:
            cursor.execute(sql, params, prepare=True)
            return cursor.fetchone()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def _entry(alias: str, fields: dict, now, row) -> LedgerEntry | None:
    if row is None or row[0] is None:
        return None
    entry_id, profile_id, balance_after = row
    # The stored row, built as a query would load it (from_db takes every column in order, and
    # is much cheaper than keyword construction on this hot path).
    values = {**fields, "id": entry_id, "profile_id": profile_id, "balance_after": balance_after, "created_at": now}
    return LedgerEntry.from_db(alias, None, [values[f.attname] for f in LedgerEntry._meta.concrete_fields])


# Sweeping the expired grants of many locked profiles (grants.expire_many_locked), set-based:
# each grant's expiry entry carries the running balance of its profile (grants in expiry order),
# the entry is matched back to its grant by (profile, balance_after), unique because every
# expiry takes at least one credit, and the next-expiry hint is the soonest grant left open:
# every grant that has expired by `now` is emptied by this same statement.
_EXPIRE_SQL = """
WITH expired AS (
    SELECT g.id, g.profile_id, g.remaining,
        p.credits - SUM(g.remaining) OVER (PARTITION BY g.profile_id ORDER BY g.expires_at, g.id) AS balance_after,
        g.remaining || ' ' || CASE g.category {labels} END || ' credits expired' AS reason,
        ROW_NUMBER() OVER (ORDER BY g.profile_id, g.expires_at, g.id) AS n
    FROM {grant} g JOIN {profile} p ON p.id = g.profile_id
    WHERE g.profile_id = ANY(%(profile_ids)s) AND p.id = ANY(%(profile_ids)s)
        AND g.remaining > 0 AND g.expires_at <= %(now)s
), entries AS (
    INSERT INTO {ledger} (profile_id, delta, balance_after, kind, reason, created_at)
    SELECT profile_id, -remaining, balance_after, %(kind)s, reason, %(now)s FROM expired ORDER BY n
    RETURNING id, profile_id, balance_after
), swept AS (
    SELECT x.id AS grant_id, x.profile_id, x.remaining, e.id AS entry_id
    FROM expired x JOIN entries e ON e.profile_id = x.profile_id AND e.balance_after = x.balance_after
), allocations AS (
    INSERT INTO {allocation} (entry_id, grant_id, amount) SELECT entry_id, grant_id, remaining FROM swept
), emptied AS (
    UPDATE {grant} g SET remaining = 0 FROM expired x WHERE g.id = x.id
), profiles AS (
    UPDATE {profile} p
    SET credits = p.credits - t.total,
        next_expiry = (
            SELECT MIN(g.expires_at) FROM {grant} g
            WHERE g.profile_id = p.id AND g.remaining > 0 AND g.expires_at > %(now)s
        )
    FROM (
        SELECT ids.id, COALESCE(SUM(x.remaining), 0) AS total
        FROM unnest(%(profile_ids)s::bigint[]) AS ids (id) LEFT JOIN expired x ON x.profile_id = ids.id
        GROUP BY ids.id
    ) t
    WHERE p.id = t.id
)
SELECT entry_id, grant_id, profile_id, remaining FROM swept ORDER BY entry_id
"""


def expire_postgresql(alias: str, profile_ids: list[int], now) -> list[tuple[int, int, int, int]]:
    """Sweep the expired grants of `profile_ids` (rows locked by the caller) in one statement:
    an expiry entry and its allocation per grant, the grants emptied, balances and next-expiry
    hints set. Returns (entry id, grant id, profile id, credits) per grant swept."""
    params = {
        "profile_ids": list(profile_ids),
        "now": now,
        "kind": LedgerEntry.Kind.EXPIRY,
        # The reason names the category as the active language does ("3 promotional credits expired").
        **{f"label_{value}": str(label).lower() for value, label in CreditGrant.Category.choices},
    }
    with connections[alias].cursor() as cursor:
        cursor.execute(_expire_sql(), params)
        return cursor.fetchall()


@functools.cache
def _expire_sql() -> str:
    # The category values are the model's own constants; their labels go as parameters.
    labels = " ".join(f"WHEN '{value}' THEN %(label_{value})s" for value in CreditGrant.Category.values)
    return _EXPIRE_SQL.format(
        labels=labels,
        grant=CreditGrant._meta.db_table,
        profile=Profile._meta.db_table,
        ledger=LedgerEntry._meta.db_table,
        allocation=GrantAllocation._meta.db_table,
    )
