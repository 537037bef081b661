"""`manage.py audit_credits`: check the ledger invariant (billing/ledger/invariants.py, docs/DESIGN.md)
for every profile at once, in one set-based query."""

from django.core.management.base import BaseCommand, CommandError
from django.db import router

from billing.ledger.invariants import broken_profiles, grant_problems, hold_problems
from billing.models import LedgerEntry, Profile


class Command(BaseCommand):
    help = (
        "Check that every balance equals the sum of its ledger, its newest entry's balance_after and "
        "what its grants hold, and that every draw on a grant is accounted for and was made before it expired."
    )

    def handle(self, *args, **options):
        using = router.db_for_read(LedgerEntry)
        broken = 0
        for profile_id, login, credits, total, newest_balance in broken_profiles(using):
            if broken == 0:
                self.stdout.write("Profiles whose balance does not match their ledger:")
            broken += 1
            newest = "no entries" if newest_balance is None else newest_balance
            self.stdout.write(
                f"  {login} (profile {profile_id}): credits={credits} ledger_sum={total} last_balance_after={newest}"
            )
        problems = grant_problems(using) + hold_problems(using)
        if problems:
            self.stdout.write("Credit grants or holds that do not match the ledger:")
            for profile_id, problem in problems:
                self.stdout.write(f"  profile {profile_id}: {problem}")
        if broken or problems:
            noun = "profile" if broken == 1 else "profiles"
            raise CommandError(
                f"{broken} {noun} broken: the balance does not match the ledger; "
                f"{len(problems)} grant or hold problem(s)"
            )
        checked = Profile.objects.using(using).count()
        noun = "profile" if checked == 1 else "profiles"
        self.stdout.write(f"OK: {checked} {noun} checked, every balance matches its ledger and its grants")
