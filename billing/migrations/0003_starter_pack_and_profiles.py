"""The `starter` pack (5 credits for 500 USD cents, the original app's "$5 for 5 credits"), and a
profile for any user who existed before the billing app was installed."""

from django.conf import settings
from django.db import migrations


def forwards(apps, schema_editor):
    CreditPack = apps.get_model("billing", "CreditPack")
    Profile = apps.get_model("billing", "Profile")
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    CreditPack.objects.get_or_create(
        slug="starter", defaults={"name": "Starter", "credits": 5, "amount": 500, "currency": "usd", "active": True}
    )
    missing = User.objects.filter(profile__isnull=True).values_list("pk", flat=True)
    Profile.objects.bulk_create([Profile(user_id=pk) for pk in missing], ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_ledger_append_only"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
