"""Ledger entries get a staff-only note (who asked, the ticket, our ids), beside the reason the
customer reads. `billing_spend` writes it with the entry in the same call, so its signature
gains `p_staff_note` (the old eight-argument function is dropped, so only one is installed).
`billing_capture` writes captures, which carry no note: the column's database default fills it.
"""

from django.db import migrations, models

from billing.migrations._postgresql import run_on_postgresql

SPEND_SQL = """
CREATE OR REPLACE FUNCTION billing_spend(
    p_user_id bigint, p_amount bigint, p_kind text, p_reason text, p_actor_id bigint,
    p_payment_id bigint, p_key text, p_now timestamptz, p_staff_note text
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
        (profile_id, delta, balance_after, kind, reason, staff_note, actor_id, payment_id, idempotency_key, created_at)
    VALUES (v_profile, -p_amount, v_balance, p_kind, p_reason, p_staff_note, p_actor_id, p_payment_id, p_key, p_now)
    RETURNING id INTO v_entry;
    PERFORM billing_draw(v_profile, v_entry, p_amount);
    RETURN QUERY SELECT v_entry, v_profile, v_balance;
END;
$$ LANGUAGE plpgsql;
"""

DROP_OLD_SQL = "DROP FUNCTION IF EXISTS billing_spend(bigint, bigint, text, text, bigint, bigint, text, timestamptz);"
DROP_NEW_SQL = (
    "DROP FUNCTION IF EXISTS billing_spend(bigint, bigint, text, text, bigint, bigint, text, timestamptz, text);"
)


def create(apps, schema_editor):
    run_on_postgresql(schema_editor, DROP_OLD_SQL)
    run_on_postgresql(schema_editor, SPEND_SQL)


def drop(apps, schema_editor):
    # Back to the spend of migration 0018, which writes no note.
    from importlib import import_module

    previous = import_module("billing.migrations.0018_ledger_functions_with_holds")
    run_on_postgresql(schema_editor, DROP_NEW_SQL)
    run_on_postgresql(schema_editor, previous.SPEND_SQL)


class Migration(migrations.Migration):
    dependencies = [("billing", "0026_receipts")]

    operations = [
        migrations.AddField(
            model_name="ledgerentry",
            name="staff_note",
            field=models.CharField(blank=True, db_default="", default="", max_length=500),
        ),
        migrations.RunPython(create, drop, elidable=False),
    ]
