"""`billing_spend`: a debit drawn from the profile's grants in one call (PostgreSQL only).

The ledger's hot path (billing/ledger, docs/DESIGN.md "Credit grants"): one statement that takes
the balance down with a conditional UPDATE (which also takes the profile's row lock), appends the
ledger entry, then draws the grants in the drawdown order and records each draw. PL/pgSQL runs
each statement inside with a fresh snapshot, so the grants are read after the profile's lock was
won, never from a snapshot older than a concurrent writer's commit (one statement with several
data-modifying CTEs would read them before waiting for the lock). Every writer of a profile's
grants holds that profile's row lock first, so the grants need no locks of their own.

It answers no row when the UPDATE matched nothing: the balance is short, the profile's next expiry
has passed (the caller sweeps it, then retries), or there is no profile. A repeated idempotency
key fails on the unique index, which undoes the whole statement. tests/test_ledger_sql.py checks
the function exists after all migrations.
"""

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

DROP_SQL = "DROP FUNCTION IF EXISTS billing_spend(bigint, bigint, text, text, bigint, bigint, text, timestamptz);"


def create_function(apps, schema_editor):
    run_on_postgresql(schema_editor, FUNCTION_SQL)


def drop_function(apps, schema_editor):
    run_on_postgresql(schema_editor, DROP_SQL)


class Migration(migrations.Migration):
    dependencies = [("billing", "0009_balances_become_grants")]

    operations = [migrations.RunPython(create_function, drop_function, elidable=False)]
