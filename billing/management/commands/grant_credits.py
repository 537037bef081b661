"""`manage.py grant_credits USER N --reason TEXT [--note TEXT] [--category paid|promotional] [--expires-in-days D]`:
give credits that were not bought, in a new grant, through the ledger.

USER is the login name (USERNAME_FIELD: the email for email-login user models) or the email."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.ledger import MAX_DELTA, grant_credits
from billing.management.arguments import find_user, note_text, reason_text, whole_number
from billing.models import MAX_VALIDITY_DAYS, CreditGrant
from billing.users import display_name

CATEGORIES = CreditGrant.Category.values


class Command(BaseCommand):
    help = "Grant a user N credits (promotional by default), optionally expiring after D days, with a reason."

    def add_arguments(self, parser):
        parser.add_argument("email", metavar="USER", help="the user's login name or email (case-insensitive)")
        parser.add_argument("amount", metavar="N", help="whole number of credits to give, e.g. 5")
        parser.add_argument("--reason", required=True, help="why, for the customer (required; on their billing page)")
        parser.add_argument("--note", default="", help="for staff only: who asked, ticket number (never shown)")
        parser.add_argument(
            "--category", default=CreditGrant.Category.PROMOTIONAL, help="paid or promotional (default)"
        )
        parser.add_argument(
            "--expires-in-days", metavar="D", help="the credits expire D days from now (default: never)"
        )

    def handle(self, *args, email, amount, reason, category, expires_in_days=None, **options):
        amount = whole_number(amount, name="N", minimum=1, maximum=MAX_DELTA)
        reason = reason_text(reason)
        note = note_text(options.get("note"))
        given, category = category, str(category).strip().lower()
        if category not in CATEGORIES:
            raise CommandError(f"--category must be one of {', '.join(CATEGORIES)}, got {given!r}")
        expires_at = None
        if expires_in_days is not None:
            days = whole_number(expires_in_days, name="--expires-in-days", minimum=1, maximum=MAX_VALIDITY_DAYS)
            expires_at = timezone.now() + timedelta(days=days)
        user = find_user(email)
        try:
            entry = grant_credits(
                user, amount, reason=reason, category=category, expires_at=expires_at, staff_note=note
            )
        except ValueError as exc:  # the ledger's own checks: a NUL in the reason, a balance beyond its range...
            raise CommandError(str(exc)) from exc
        until = f"expiring {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else "never expiring"
        self.stdout.write(
            f"{display_name(user)}: +{entry.delta} {category} credits, {until}; "
            f"balance now {entry.balance_after} (ledger entry {entry.pk})"
        )
