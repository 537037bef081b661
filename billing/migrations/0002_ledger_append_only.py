"""The ledger is append-only in the database itself: on PostgreSQL a trigger refuses any UPDATE
or DELETE of a ledger row, whoever sends it (the ORM, raw SQL, a psql session).

tests/test_append_only.py checks that the trigger exists after all migrations, so a later
migration cannot drop it silently. TRUNCATE is left alone: it is how Django's test flush and
an operator's deliberate wipe work, and it is not a row-level edit.
"""

from django.db import migrations

from billing.migrations._postgresql import run_on_postgresql

TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION billing_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'billing_ledgerentry is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS billing_ledgerentry_append_only ON billing_ledgerentry;
CREATE TRIGGER billing_ledgerentry_append_only
    BEFORE UPDATE OR DELETE ON billing_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION billing_ledger_append_only();
"""

DROP_SQL = """
DROP TRIGGER IF EXISTS billing_ledgerentry_append_only ON billing_ledgerentry;
DROP FUNCTION IF EXISTS billing_ledger_append_only();
"""


def create_trigger(apps, schema_editor):
    run_on_postgresql(schema_editor, TRIGGER_SQL)


def drop_trigger(apps, schema_editor):
    run_on_postgresql(schema_editor, DROP_SQL)


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(create_trigger, drop_trigger, elidable=False)]
