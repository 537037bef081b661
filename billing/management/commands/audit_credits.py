"""`manage.py audit_credits`: check the ledger invariant (docs/DESIGN.md) for every profile at once.

For each profile: `credits == sum(delta)` of its ledger entries (0 when it has none), and the
newest entry's `balance_after == credits`. One set-based query does it (a single GROUP BY pass
over the ledger, then a join by primary key to each profile's newest entry), so the time grows
with one scan of the table, never with one query per user.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connections, router

from billing.models import LedgerEntry, Profile

_BROKEN_SQL = """
SELECT p.id, u.{login}, p.credits, COALESCE(l.total, 0), newest.balance_after
FROM {profile} p
JOIN {user} u ON u.{user_pk} = p.user_id
LEFT JOIN (
    SELECT profile_id, SUM(delta) AS total, MAX(id) AS newest_id
    FROM {ledger}
    GROUP BY profile_id
) l ON l.profile_id = p.id
LEFT JOIN {ledger} newest ON newest.id = l.newest_id
WHERE p.credits <> COALESCE(l.total, 0)
   OR newest.balance_after <> p.credits
ORDER BY p.id
"""


def broken_profiles(using: str):
    """Yield (profile id, login name, credits, ledger sum, newest balance_after or None) per broken profile."""
    User = get_user_model()
    sql = _BROKEN_SQL.format(
        login=User._meta.get_field(User.USERNAME_FIELD).column,
        user_pk=User._meta.pk.column,
        profile=Profile._meta.db_table,
        user=User._meta.db_table,
        ledger=LedgerEntry._meta.db_table,
    )
    with connections[using].cursor() as cursor:
        cursor.execute(sql)
        while rows := cursor.fetchmany(1000):
            yield from rows


class Command(BaseCommand):
    help = "Check that every balance equals the sum of its ledger and its newest entry's balance_after."

    def handle(self, *args, **options):
        using = router.db_for_read(LedgerEntry)
        broken = 0
        for profile_id, email, credits, total, newest_balance in broken_profiles(using):
            if broken == 0:
                self.stdout.write("Profiles whose balance does not match their ledger:")
            broken += 1
            newest = "no entries" if newest_balance is None else newest_balance
            self.stdout.write(
                f"  {email} (profile {profile_id}): credits={credits} ledger_sum={total} last_balance_after={newest}"
            )
        if broken:
            noun = "profile" if broken == 1 else "profiles"
            raise CommandError(f"{broken} {noun} broken: the balance does not match the ledger")
        checked = Profile.objects.using(using).count()
        noun = "profile" if checked == 1 else "profiles"
        self.stdout.write(f"OK: {checked} {noun} checked, every balance matches its ledger")
