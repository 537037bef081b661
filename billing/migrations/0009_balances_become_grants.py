"""Every balance held before grants existed becomes one never-expiring paid grant, so that a
profile's grants add up to its balance from the first moment (docs/DESIGN.md, "Credit grants").

One set-based INSERT ... SELECT, the same SQL on PostgreSQL and SQLite. Run it with the old code
stopped (as every migration here): a purchase credited by the old code after this runs would hold
credits no grant covers, which `audit_credits` reports.
"""

from django.db import migrations
from django.utils import timezone


def balances_to_grants(apps, schema_editor):
    Profile = apps.get_model("billing", "Profile")
    CreditGrant = apps.get_model("billing", "CreditGrant")
    quote = schema_editor.quote_name
    grant, profile = quote(CreditGrant._meta.db_table), quote(Profile._meta.db_table)
    schema_editor.execute(
        f"INSERT INTO {grant} (profile_id, category, source, amount, remaining, expires_at, payment_id, entry_id, "  # noqa: S608 - model table names
        f"created_at) SELECT id, 'paid', 'migration', credits, credits, NULL, NULL, NULL, %s FROM {profile} "
        "WHERE credits > 0",
        [timezone.now()],
    )


def grants_to_balances(apps, schema_editor):
    # Going back to single balances: the balances were never changed, only the grants go.
    CreditGrant = apps.get_model("billing", "CreditGrant")
    GrantAllocation = apps.get_model("billing", "GrantAllocation")
    GrantAllocation.objects.all().delete()
    CreditGrant.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0008_credit_grants")]

    operations = [migrations.RunPython(balances_to_grants, grants_to_balances, elidable=False)]
