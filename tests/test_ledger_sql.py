"""The SQL the ledger relies on is installed by the migrations and still matches the Python.

Contract tests of the implementation: they pin the PostgreSQL function by name and signature,
so they are meant to move when the implementation does."""

import pytest
from django.db import connection

from billing.ledger import grants

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def function_source(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_function_identity_arguments(p.oid), p.prosrc FROM pg_proc p WHERE p.proname = %s", [name]
        )
        rows = cursor.fetchall()
    assert len(rows) == 1, f"{name} is installed once, found {len(rows)}"
    return rows[0]


def test_the_ledger_functions_exist_after_all_migrations():
    arguments, source = function_source("billing_spend")
    assert arguments == (
        "p_user_id bigint, p_amount bigint, p_kind text, p_reason text, p_actor_id bigint, "
        "p_payment_id bigint, p_key text, p_now timestamp with time zone, p_staff_note text"
    )
    assert "p_staff_note" in source
    assert "credits - held >= p_amount" in source and "billing_draw(" in source
    arguments, source = function_source("billing_capture")
    assert arguments == "p_hold_id bigint, p_amount bigint, p_reason text, p_key text, p_now timestamp with time zone"
    assert "FOR UPDATE" in source and "billing_draw(" in source
    arguments, source = function_source("billing_draw")
    assert arguments == "p_profile bigint, p_entry bigint, p_amount bigint"
    # The drawdown order it spells in SQL is the one grants.DRAWDOWN_ORDER defines.
    assert "ORDER BY expires_at ASC NULLS LAST, category DESC, created_at, id" in source
    assert [str(term) for term in grants.DRAWDOWN_ORDER] == [
        "OrderBy(F(expires_at), descending=False)",
        "OrderBy(F(category), descending=True)",
        "OrderBy(F(created_at), descending=False)",
        "OrderBy(F(id), descending=False)",
    ]
