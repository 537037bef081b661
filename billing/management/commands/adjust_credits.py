"""`manage.py adjust_credits EMAIL DELTA --reason TEXT [--actor EMAIL]`: a staff correction, through the ledger."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from billing.exceptions import InsufficientCredits
from billing.ledger import adjust_credits
from billing.models import LedgerEntry

MAX_REASON = LedgerEntry._meta.get_field("reason").max_length


class Command(BaseCommand):
    help = "Add (positive DELTA) or remove (negative DELTA) credits, recorded in the ledger with a reason."

    def add_arguments(self, parser):
        parser.add_argument("email", help="the user's email (case-insensitive)")
        # A string, so "-3" reads as a negative number and a bad number gets our own message.
        parser.add_argument("delta", help="whole number of credits, e.g. 5 or -3")
        parser.add_argument("--reason", required=True, help="why (required; saved in the ledger)")
        parser.add_argument("--actor", help="email of the staff user making the change")

    def handle(self, *args, email, delta, reason, actor=None, **options):
        delta = parse_delta(delta)
        reason = (reason or "").strip()
        if not reason:
            raise CommandError("--reason must not be blank")
        if len(reason) > MAX_REASON:  # as the admin form does: the ledger would cut it short silently
            raise CommandError(f"--reason must be at most {MAX_REASON} characters, got {len(reason)}")
        user = find_user(email)
        actor_user = None
        if actor:
            actor_user = find_user(actor)
            if not actor_user.is_staff:
                raise CommandError(f"the actor {actor_user.email} is not a staff user")
        try:
            entry = adjust_credits(user, delta, reason=reason, actor=actor_user)
        except InsufficientCredits as exc:
            raise CommandError(
                f"{user.email} has {exc.balance} credits; removing {-delta} would take the balance below zero"
            ) from exc
        except ValueError as exc:  # the ledger's own checks: an absurd delta, a NUL in the reason...
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{user.email}: {entry.delta:+d} credits, balance now {entry.balance_after} (ledger entry {entry.pk})"
        )


def parse_delta(text: str) -> int:
    try:
        delta = int(str(text).strip())
    except ValueError:
        raise CommandError(f"DELTA must be a whole number of credits, got {text!r}") from None
    if delta == 0:
        raise CommandError("DELTA must not be zero")
    return delta


def find_user(email: str):
    User = get_user_model()
    if "\x00" in email:  # no email has one, and PostgreSQL refuses the query outright
        raise CommandError(f"no user with email {email!r}")
    try:
        return User.objects.get_by_email(email)
    except User.DoesNotExist:
        raise CommandError(f"no user with email {email!r}") from None
