"""`manage.py adjust_credits USER DELTA --reason TEXT [--note TEXT] [--actor USER]`: a staff correction,
through the ledger. The reason is the customer's; the note is for staff only.

USER is the login name (USERNAME_FIELD: the email for email-login user models) or the email."""

from django.core.management.base import BaseCommand, CommandError

from billing.exceptions import InsufficientCredits
from billing.ledger import adjust_credits
from billing.management.arguments import find_user, note_text, reason_text
from billing.users import display_name


class Command(BaseCommand):
    help = "Add (positive DELTA) or remove (negative DELTA) credits, recorded in the ledger with a reason."

    def add_arguments(self, parser):
        parser.add_argument("email", metavar="USER", help="the user's login name or email (case-insensitive)")
        # A string, so "-3" reads as a negative number and a bad number gets our own message.
        parser.add_argument("delta", help="whole number of credits, e.g. 5 or -3")
        parser.add_argument("--reason", required=True, help="why, for the customer (required; on their billing page)")
        parser.add_argument("--note", default="", help="for staff only: who asked, ticket number (never shown)")
        parser.add_argument("--actor", help="login name or email of the staff user making the change")

    def handle(self, *args, email, delta, reason, actor=None, **options):
        delta = parse_delta(delta)
        reason = reason_text(reason)
        note = note_text(options.get("note"))
        user = find_user(email)
        actor_user = None
        if actor:
            actor_user = find_user(actor)
            if not actor_user.is_staff:
                raise CommandError(f"the actor {display_name(actor_user)} is not a staff user")
        try:
            entry = adjust_credits(user, delta, reason=reason, actor=actor_user, staff_note=note)
        except InsufficientCredits as exc:
            raise CommandError(
                f"{display_name(user)} has {exc.balance} credits; removing {-delta} would take the balance below zero"
            ) from exc
        except ValueError as exc:  # the ledger's own checks: an absurd delta, a NUL in the reason...
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{display_name(user)}: {entry.delta:+d} credits, "
            f"balance now {entry.balance_after} (ledger entry {entry.pk})"
        )


def parse_delta(text: str) -> int:
    try:
        delta = int(str(text).strip())
    except ValueError:
        raise CommandError(f"DELTA must be a whole number of credits, got {text!r}") from None
    if delta == 0:
        raise CommandError("DELTA must not be zero")
    return delta
