"""`manage.py expire_credits`: write an `expiry` ledger entry for every grant whose credits have
expired, and print how many credits that was.

Safe to run every minute (a cron line or a scheduler, docs/INSTALL.md "Commands"): a run with
nothing due costs one indexed query, a second run finds nothing left, and two runs at once take
each profile's row lock in turn, so every grant expires once. Balances never include expired
credits either way; this makes the ledger say so.
"""

from django.core.management.base import BaseCommand

from billing.ledger import expire_credits


class Command(BaseCommand):
    help = "Expire every credit grant whose expiry has passed (one ledger entry per grant). Safe to re-run."

    def handle(self, *args, **options):
        expired = expire_credits()
        noun = "credit" if expired == 1 else "credits"
        self.stdout.write(f"{expired} {noun} expired.")
