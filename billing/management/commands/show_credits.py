"""`manage.py show_credits USER [--limit N]` (login name or email): a user's balance, newest
ledger entries, and open credit grants (in the order they are spent)."""

from django.core.management.base import BaseCommand
from django.db import router
from django.utils import timezone

from billing.ledger import get_balance
from billing.ledger.grants import open_grants
from billing.management.arguments import find_user, whole_number
from billing.models import LedgerEntry, Profile
from billing.users import display_name

MAX_LIMIT = 10_000  # a screenful is the point; a huge LIMIT would overflow the database's integer


class Command(BaseCommand):
    help = (
        "Show a user's credit balance, their most recent ledger entries (newest first) and their open "
        "credit grants (in the order they are spent)."
    )

    def add_arguments(self, parser):
        parser.add_argument("email", metavar="USER", help="the user's login name or email (case-insensitive)")
        parser.add_argument("--limit", default="20", help="how many ledger entries and grants to show (default 20)")

    def handle(self, *args, email, limit, **options):
        limit = whole_number(limit, name="--limit", minimum=1, maximum=MAX_LIMIT)
        user = find_user(email)
        now = timezone.now()
        self.stdout.write(f"{display_name(user)}: {get_balance(user, now=now)} credits")
        self._entries(user, limit)
        self._grants(user, limit, now)

    def _entries(self, user, limit):
        entries = list(
            LedgerEntry.objects.filter(profile__user_id=user.pk).select_related("actor").order_by("-id")[:limit]
        )
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

    def _grants(self, user, limit, now):
        alias = router.db_for_read(Profile)
        profile_id = Profile.objects.using(alias).filter(user_id=user.pk).values_list("pk", flat=True).first()
        if profile_id is None:
            return
        grants = list(open_grants(alias, profile_id, now)[: limit + 1])
        if not grants:
            return
        more = len(grants) > limit
        grants = grants[:limit]
        self.stdout.write(
            f"Open credit grants, in the order they are spent{' (first ' + str(limit) + ')' if more else ''}:"
        )
        self.stdout.write(f"{'id':>8}  {'category':<11}  {'left/amount':>15}  expires (UTC)")
        for grant in grants:
            expires = f"{grant.expires_at:%Y-%m-%d %H:%M:%S}" if grant.expires_at else "never"
            self.stdout.write(
                f"{grant.pk:>8}  {grant.category:<11}  {f'{grant.remaining}/{grant.amount}':>15}  {expires}"
            )
