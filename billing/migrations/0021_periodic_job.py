from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0020_profile_held_db_default"),
    ]

    operations = [
        migrations.CreateModel(
            name="PeriodicJob",
            fields=[
                ("name", models.CharField(max_length=100, primary_key=True, serialize=False)),
                ("last_enqueued_at", models.DateTimeField()),
            ],
        ),
    ]
