"""What the ledger storm (reliability/storm.py) checks afterwards, from the database: the ledger,
grant and hold invariants, the entries against what the workers were told, audit_credits, and the
negative control that makes sure these checks can fail."""

from __future__ import annotations

from reliability.harness import has_command, manage


def database_checks(user_ids: list[int], told: dict) -> dict:
    from django.db import connection

    from billing.ledger.invariants import broken_profiles, entries_off_running_sum, grant_problems

    profiles_broken = sum(1 for _ in broken_profiles())
    problems = grant_problems()
    running_sum_mismatches = entries_off_running_sum()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM billing_profile WHERE credits < 0")
        negative_credits = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM billing_ledgerentry WHERE balance_after < 0")
        negative_balance_after = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM (SELECT idempotency_key FROM billing_ledgerentry "
            "WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key HAVING count(*) > 1) d"
        )
        duplicate_keys = cursor.fetchone()[0]
        cursor.execute(
            "SELECT e.id, e.idempotency_key, e.delta FROM billing_ledgerentry e "
            "JOIN billing_profile p ON p.id = e.profile_id WHERE p.user_id = ANY(%s) AND e.reason LIKE 'storm %%'",
            [user_ids],
        )
        stored = {pk: (key, delta) for pk, key, delta in cursor.fetchall()}
        cursor.execute("SELECT count(*), min(balance_after), max(balance_after) FROM billing_ledgerentry")
        total_entries, min_balance_after, max_balance_after = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM billing_ledgerentry WHERE kind = 'expiry'")
        expiry_entries = cursor.fetchone()[0]
        cursor.execute("SELECT sum(credits) FROM billing_profile WHERE user_id = ANY(%s)", [user_ids])
        final_credits = cursor.fetchone()[0]
    untold = [pk for pk in stored if pk not in told]
    wrong = [pk for pk, fact in told.items() if stored.get(pk) != fact]
    return {
        "ledger_entries": total_entries,
        "storm_entries": len(stored),
        "min_balance_after": min_balance_after,
        "max_balance_after": max_balance_after,
        "final_credits_total": final_credits,
        "profiles_broken": profiles_broken,
        "expiry_entries": expiry_entries,  # grants that expired holding credits, swept mid-run
        "grant_problems": len(problems),
        "grant_problems_first": [problem.problem for problem in problems[:5]],
        "negative_credits": negative_credits,
        "negative_balance_after": negative_balance_after,
        "running_sum_mismatches": running_sum_mismatches,
        "duplicate_keys": duplicate_keys,
        "untold_entries": len(untold),
        "missing_or_wrong_entries": len(wrong),
    }


def negative_control(user_id: int, told: dict) -> dict:
    """After the verdicts: corrupt one balance with raw SQL (as a bug outside the ledger would)
    and make sure the same checks now fail, so a clean result means something."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_profile SET credits = credits + 1 WHERE user_id = %s", [user_id])
    checks = database_checks([user_id], told)
    sql_caught = checks["profiles_broken"] == 1
    grants_caught = checks["grant_problems"] >= 1  # the balance no longer what its grants hold
    audited = audit()
    # And one reservation: the hold checks must see `held` disagree with the active holds.
    from django.utils import timezone

    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_profile SET held = held + 1 WHERE user_id = %s", [user_id])
    holds_caught = hold_checks(timezone.now())["held_mismatches"] == 1
    return {
        "caught": sql_caught and grants_caught and holds_caught and audited["clean"] is not True,
        "holds_caught": holds_caught,
        "sql_caught": sql_caught,
        "grants_caught": grants_caught,
        "audit_exit": audited.get("exit_code"),
    }


_HOLD_CHECKS_SQL = {
    # Active holds the last sweep, at `now`, should have ended.
    "active_holds_past_expiry": "SELECT count(*) FROM billing_hold WHERE status = 'active' AND expires_at <= %(now)s",
    # What a profile reserves is what its active holds reserve.
    "held_mismatches": """
        SELECT count(*) FROM billing_profile p
        LEFT JOIN (SELECT profile_id, sum(amount) AS total FROM billing_hold WHERE status = 'active'
                   GROUP BY profile_id) h ON h.profile_id = p.id
        WHERE p.held <> COALESCE(h.total, 0)""",
    # The sweep trusts the hint: no active hold may expire before it.
    "holds_before_hint": """
        SELECT count(*) FROM billing_hold h JOIN billing_profile p ON p.id = h.profile_id
        WHERE h.status = 'active' AND (p.next_hold_expiry IS NULL OR h.expires_at < p.next_hold_expiry)""",
    # A captured hold's entry takes exactly what it captured (none when it captured nothing).
    "captures_off": """
        SELECT count(*) FROM billing_hold h LEFT JOIN billing_ledgerentry e ON e.id = h.entry_id
        WHERE h.status = 'captured' AND (h.captured > h.amount OR COALESCE(-e.delta, 0) <> h.captured
              OR (e.id IS NOT NULL AND (e.kind <> 'capture' OR e.profile_id <> h.profile_id)))""",
}


def hold_checks(now) -> dict:
    from django.db import connection

    out = {}
    with connection.cursor() as cursor:
        for name, sql in _HOLD_CHECKS_SQL.items():
            cursor.execute(sql, {"now": now})
            out[name] = cursor.fetchone()[0]
        cursor.execute("SELECT status, count(*) FROM billing_hold GROUP BY status ORDER BY status")
        out["holds_by_status"] = dict(cursor.fetchall())
    return out


def expired_open(now) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM billing_creditgrant WHERE remaining > 0 AND expires_at <= %s", [now])
        return cursor.fetchone()[0]


def audit() -> dict:
    if not has_command("audit_credits"):
        return {"clean": None, "output": "audit_credits does not exist yet; the SQL checks stand alone"}
    result = manage("audit_credits")
    return {
        "clean": result.returncode == 0,
        "exit_code": result.returncode,
        "output": (result.stdout + result.stderr)[-2000:],
    }
