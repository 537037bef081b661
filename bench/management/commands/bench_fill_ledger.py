import time

from django.core.management.base import BaseCommand, CommandError

from bench.fill import fill


class Command(BaseCommand):
    help = "Generate bench users, profiles and ledger entries set-based (PostgreSQL; bench databases only)."

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=10_000)
        parser.add_argument("--entries-per-user", type=int, default=100)
        parser.add_argument("--prefix", default="bench", help="emails are <prefix><n>@example.com")

    def handle(self, *args, users, entries_per_user, prefix, **options):
        from django.db import connection

        if "bench" not in connection.settings_dict["NAME"]:
            raise CommandError("bench data goes only into a database whose name contains 'bench'")
        if users <= 0 or entries_per_user < 0:
            raise CommandError("--users must be positive and --entries-per-user not negative")
        started = time.perf_counter()
        filled = fill(users=users, entries_per_user=entries_per_user, prefix=prefix, log=lambda m: self.stdout.write(m))
        self.stdout.write(
            f"{filled.users} users, {filled.entries} ledger entries, balance {filled.balance} each, "
            f"in {time.perf_counter() - started:.1f} s"
        )
