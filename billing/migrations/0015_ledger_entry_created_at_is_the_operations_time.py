"""A ledger entry's `created_at` is the time billing.ledger gives the operation, as the PostgreSQL
writers already store it, rather than the moment the ORM inserts the row (auto_now_add overrode
the time the ledger passed). Draws from grants are checked against it (docs/DESIGN.md, "Credit
grants"), so a clawback that waited for the profile's lock must be recorded at the time it drew
at. Nothing changes in the database: the column and its rows stay as they are.
"""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("billing", "0014_grant_credits_permission")]

    operations = [
        migrations.AlterField(
            model_name="ledgerentry",
            name="created_at",
            field=models.DateTimeField(default=django.utils.timezone.now, editable=False),
        ),
    ]
