"""The shared cache's table (login throttling; core/settings.py, CACHES), made by `migrate` itself.

With the database cache, allauth's rate limits read and write this table on every sign-in; were
it left to a separate `createcachetable` that a deployment forgot, every login would fail. This
runs Django's own `createcachetable` for the database being migrated: it creates the table when
a database cache is configured and it is missing, and does nothing otherwise (Redis, or a rerun).
"""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0002_email_unique_message")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop, elidable=True)]
