"""What billing's commands read from their command line, checked the same way everywhere: users
by login name or email, bounded whole numbers, reasons. Each refusal is a CommandError naming the
argument, never a traceback."""

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from billing.models import LedgerEntry
from billing.users import lookup_fields

MAX_REASON = LedgerEntry._meta.get_field("reason").max_length
MAX_NOTE = LedgerEntry._meta.get_field("staff_note").max_length


def find_user(identifier: str):
    """The user whose login name (USERNAME_FIELD) or, failing that, email is `identifier`,
    compared case-insensitively: works with any user model."""
    User = get_user_model()
    label = describe_identifier()
    if "\x00" in identifier:  # no name has one, and PostgreSQL refuses the query outright
        raise CommandError(f"no user with {label} {identifier!r}")
    for field in lookup_fields(User):
        matches = list(User._default_manager.filter(**{f"{field}__iexact": identifier.strip()})[:2])
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise CommandError(f"more than one user has the {field} {identifier!r}; use the exact login name")
    raise CommandError(f"no user with {label} {identifier!r}")


def describe_identifier() -> str:
    """How commands name a user: "email" for an email-login model, "username or email" otherwise."""
    fields = lookup_fields(get_user_model())
    return " or ".join(fields)


def whole_number(text, *, name: str, minimum: int, maximum: int) -> int:
    """`text` as a whole number from `minimum` to `maximum`, or a CommandError naming `name`."""
    try:
        value = int(str(text).strip())
    except ValueError:
        value = None
    if value is None or not minimum <= value <= maximum:
        raise CommandError(f"{name} must be a whole number from {minimum:,} to {maximum:,}, got {text!r}")
    return value


def reason_text(reason) -> str:
    """A reason for the ledger: not blank, and no longer than the ledger keeps (as the admin
    forms check: the ledger would otherwise cut it short silently)."""
    reason = (reason or "").strip()
    if not reason:
        raise CommandError("--reason must not be blank")
    if len(reason) > MAX_REASON:
        raise CommandError(f"--reason must be at most {MAX_REASON} characters, got {len(reason)}")
    return reason


def note_text(note, *, required: bool = False) -> str:
    """A staff note for the ledger (staff only, never shown to the customer): no longer than the
    ledger keeps, and present when `required`."""
    note = (note or "").strip()
    if required and not note:
        raise CommandError("--note must not be blank: who asked, and why")
    if len(note) > MAX_NOTE:
        raise CommandError(f"--note must be at most {MAX_NOTE} characters, got {len(note)}")
    return note
