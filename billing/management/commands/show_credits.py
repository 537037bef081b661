"""`manage.py show_credits USER [--limit N]` (login name or email): a user's balance and newest ledger entries."""

from django.core.management.base import BaseCommand

from billing.ledger import get_balance
from billing.management.arguments import find_user, whole_number
from billing.models import LedgerEntry
from billing.users import display_name

MAX_LIMIT = 10_000  # a screenful is the point; a huge LIMIT would overflow the database's integer


class Command(BaseCommand):
    help = "Show a user's credit balance and their most recent ledger entries, newest first."

    def add_arguments(self, parser):
        parser.add_argument("email", metavar="USER", help="the user's login name or email (case-insensitive)")
        parser.add_argument("--limit", default="20", help="how many ledger entries to show (default 20)")

    def handle(self, *args, email, limit, **options):
        limit = whole_number(limit, name="--limit", minimum=1, maximum=MAX_LIMIT)
        user = find_user(email)
        entries = list(
            LedgerEntry.objects.filter(profile__user_id=user.pk).select_related("actor").order_by("-id")[:limit]
        )
        self.stdout.write(f"{display_name(user)}: {get_balance(user)} credits")
        if not entries:
            self.stdout.write("No ledger entries.")
            return
        self.stdout.write(f"Newest {len(entries)} ledger entries:")
        self.stdout.write(f"{'id':>8}  {'when (UTC)':<19}  {'kind':<10}  {'delta':>7}  {'balance':>7}  reason")
        for entry in entries:
            actor = f" [by {display_name(entry.actor)}]" if entry.actor else ""
            self.stdout.write(
                f"{entry.pk:>8}  {entry.created_at:%Y-%m-%d %H:%M:%S}  {entry.kind:<10}  {entry.delta:>+7d}  "
                f"{entry.balance_after:>7}  {entry.reason}{actor}"
            )
