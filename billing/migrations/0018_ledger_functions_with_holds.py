"""The ledger's PostgreSQL functions learn about holds (docs/DESIGN.md, "Holds").

- `billing_spend` now refuses to take credits that active holds reserve (`credits - held`).
- `billing_capture` settles an active, unexpired hold in one call: it locks the profile (the
  order every writer of a profile follows), re-reads the hold with a fresh snapshot, frees the
  reservation and takes what was used, appends the `capture` entry and draws the grants in the
  drawdown order. It answers no row for every other case (the hold already ended or expired,
  credits expired since the last sweep, the grants short), which billing.ledger then settles
  through its ORM path under the same lock. tests/test_ledger_sql.py checks both exist.
"""

from django.db import migrations

from billing.migrations._postgresql import run_on_postgresql

SPEND_SQL = """
CREATE OR REPLACE FUNCTION billing_spend(
    p_user_id bigint, p_amount bigint, p_kind text, p_reason text, p_actor_id bigint,
    p_payment_id bigint, p_key text, p_now timestamptz
) RETURNS TABLE (entry_id bigint, profile_id bigint, balance_after bigint) AS $$
DECLARE
    v_profile bigint;
    v_balance bigint;
    v_entry bigint;
BEGIN
    UPDATE billing_profile SET credits = credits - p_amount
    WHERE user_id = p_user_id AND credits - held >= p_amount AND (next_expiry IS NULL OR next_expiry > p_now)
    RETURNING id, credits INTO v_profile, v_balance;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO billing_ledgerentry
        (profile_id, delta, balance_after, kind, reason, actor_id, payment_id, idempotency_key, created_at)
    VALUES (v_profile, -p_amount, v_balance, p_kind, p_reason, p_actor_id, p_payment_id, p_key, p_now)
    RETURNING id INTO v_entry;
    PERFORM billing_draw(v_profile, v_entry, p_amount);
    RETURN QUERY SELECT v_entry, v_profile, v_balance;
END;
$$ LANGUAGE plpgsql;
"""

# The drawdown order (docs/DESIGN.md): soonest expiry first, never-expiring last; promotional
# ("promotional" > "paid") before paid; oldest first. The caller holds the profile's row lock
# and has checked that nothing open has expired (next_expiry lies ahead).
DRAW_SQL = """
CREATE OR REPLACE FUNCTION billing_draw(p_profile bigint, p_entry bigint, p_amount bigint) RETURNS void AS $$
DECLARE
    v_left bigint := p_amount;
    v_draw bigint;
    g record;
BEGIN
    FOR g IN
        SELECT id, remaining FROM billing_creditgrant
        WHERE billing_creditgrant.profile_id = p_profile AND remaining > 0
        ORDER BY expires_at ASC NULLS LAST, category DESC, created_at, id
        -- Every open grant holds at least one credit, so p_amount grants always suffice; the
        -- LIMIT lets the planner read the first rows of billing_grant_open_drawdown instead of
        -- sorting every open grant (migration 0016).
        LIMIT p_amount
    LOOP
        v_draw := LEAST(g.remaining, v_left);
        UPDATE billing_creditgrant SET remaining = remaining - v_draw WHERE id = g.id;
        INSERT INTO billing_grantallocation (entry_id, grant_id, amount) VALUES (p_entry, g.id, v_draw);
        v_left := v_left - v_draw;
        EXIT WHEN v_left = 0;
    END LOOP;
    IF v_left <> 0 THEN
        RAISE EXCEPTION 'billing: the grants of profile % hold % credits less than its balance', p_profile, v_left
            USING ERRCODE = 'data_exception';
    END IF;
END;
$$ LANGUAGE plpgsql;
"""

CAPTURE_SQL = """
CREATE OR REPLACE FUNCTION billing_capture(
    p_hold_id bigint, p_amount bigint, p_reason text, p_key text, p_now timestamptz
) RETURNS TABLE (entry_id bigint, profile_id bigint, balance_after bigint) AS $$
DECLARE
    v_profile bigint;
    v_held bigint;
    v_status text;
    v_expires timestamptz;
    v_balance bigint;
    v_entry bigint;
BEGIN
    SELECT h.profile_id INTO v_profile FROM billing_hold h WHERE h.id = p_hold_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM 1 FROM billing_profile WHERE id = v_profile FOR UPDATE;
    SELECT h.amount, h.status, h.expires_at INTO v_held, v_status, v_expires FROM billing_hold h WHERE h.id = p_hold_id;
    IF v_status <> 'active' OR v_expires <= p_now OR p_amount > v_held THEN
        RETURN;
    END IF;
    UPDATE billing_profile SET held = held - v_held, credits = credits - p_amount
    WHERE id = v_profile AND credits - p_amount >= held - v_held AND (next_expiry IS NULL OR next_expiry > p_now)
    RETURNING credits INTO v_balance;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF p_amount > 0 THEN
        INSERT INTO billing_ledgerentry
            (profile_id, delta, balance_after, kind, reason, actor_id, payment_id, idempotency_key, created_at)
        VALUES (v_profile, -p_amount, v_balance, 'capture', p_reason, NULL, NULL, p_key, p_now)
        RETURNING id INTO v_entry;
        PERFORM billing_draw(v_profile, v_entry, p_amount);
    END IF;
    UPDATE billing_hold SET status = 'captured', captured = p_amount, entry_id = v_entry, ended_at = p_now
    WHERE id = p_hold_id;
    RETURN QUERY SELECT v_entry, v_profile, v_balance;
END;
$$ LANGUAGE plpgsql;
"""

DROP_SQL = """
DROP FUNCTION IF EXISTS billing_capture(bigint, bigint, text, text, timestamptz);
DROP FUNCTION IF EXISTS billing_draw(bigint, bigint, bigint);
"""


def create(apps, schema_editor):
    for sql in (DRAW_SQL, SPEND_SQL, CAPTURE_SQL):
        run_on_postgresql(schema_editor, sql)


def drop(apps, schema_editor):
    # Back to the spend of migration 0016, which knows no holds.
    from importlib import import_module

    previous = import_module("billing.migrations.0016_ledger_spend_reads_only_the_grants_it_draws")
    run_on_postgresql(schema_editor, previous.FUNCTION_SQL)
    run_on_postgresql(schema_editor, DROP_SQL)


class Migration(migrations.Migration):
    dependencies = [("billing", "0017_holds")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
