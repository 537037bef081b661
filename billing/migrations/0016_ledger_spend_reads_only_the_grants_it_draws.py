"""`billing_spend` reads at most as many grants as it draws credits, so a spend costs the same
whatever the number of the profile's open grants (docs/BENCHMARKS.md).

The function of migration 0010 drew from a FOR loop over all the profile's open grants in the
drawdown order. PL/pgSQL plans such a query for its whole result, so with thousands of open
grants (a small bonus a day, say) PostgreSQL sorted every one of them on each spend (a profile
with 16,000 open grants: 60 spends a second instead of 2,000). Every open grant holds at least one
credit, so `LIMIT p_amount` never cuts a draw short, and with it the planner reads the first rows
of the drawdown index. Nothing else changes.
"""

import importlib

from django.db import migrations

from billing.migrations._postgresql import run_on_postgresql

FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION billing_spend(
    p_user_id bigint, p_amount bigint, p_kind text, p_reason text, p_actor_id bigint,
    p_payment_id bigint, p_key text, p_now timestamptz
) RETURNS TABLE (entry_id bigint, profile_id bigint, balance_after bigint) AS $$
DECLARE
    v_profile bigint;
    v_balance bigint;
    v_entry bigint;
    v_left bigint := p_amount;
    v_draw bigint;
    g record;
BEGIN
    UPDATE billing_profile SET credits = credits - p_amount
    WHERE user_id = p_user_id AND credits >= p_amount AND (next_expiry IS NULL OR next_expiry > p_now)
    RETURNING id, credits INTO v_profile, v_balance;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO billing_ledgerentry
        (profile_id, delta, balance_after, kind, reason, actor_id, payment_id, idempotency_key, created_at)
    VALUES (v_profile, -p_amount, v_balance, p_kind, p_reason, p_actor_id, p_payment_id, p_key, p_now)
    RETURNING id INTO v_entry;
    -- The drawdown order (docs/DESIGN.md): soonest expiry first, never-expiring last; promotional
    -- ("promotional" > "paid") before paid; oldest first.
    FOR g IN
        SELECT id, remaining FROM billing_creditgrant
        WHERE billing_creditgrant.profile_id = v_profile AND remaining > 0
        ORDER BY expires_at ASC NULLS LAST, category DESC, created_at, id
        -- Every open grant holds at least one credit, so p_amount grants always suffice. Without a
        -- LIMIT, PL/pgSQL plans a FOR loop's query for all its rows: past a few thousand open
        -- grants that is a sort of every one of them on each spend instead of reading the first
        -- row of billing_grant_open_drawdown.
        LIMIT p_amount
    LOOP
        v_draw := LEAST(g.remaining, v_left);
        UPDATE billing_creditgrant SET remaining = remaining - v_draw WHERE id = g.id;
        INSERT INTO billing_grantallocation (entry_id, grant_id, amount) VALUES (v_entry, g.id, v_draw);
        v_left := v_left - v_draw;
        EXIT WHEN v_left = 0;
    END LOOP;
    IF v_left <> 0 THEN
        RAISE EXCEPTION 'billing: the grants of profile % hold % credits less than its balance', v_profile, v_left
            USING ERRCODE = 'data_exception';
    END IF;
    RETURN QUERY SELECT v_entry, v_profile, v_balance;
END;
$$ LANGUAGE plpgsql;
"""


def create_function(apps, schema_editor):
    run_on_postgresql(schema_editor, FUNCTION_SQL)


def restore_previous(apps, schema_editor):
    previous = importlib.import_module("billing.migrations.0010_ledger_spend_function")
    run_on_postgresql(schema_editor, previous.FUNCTION_SQL)


class Migration(migrations.Migration):
    dependencies = [("billing", "0015_ledger_entry_created_at_is_the_operations_time")]

    operations = [migrations.RunPython(create_function, restore_previous, elidable=False)]
