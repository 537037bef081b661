from django.utils.translation import ngettext


class BillingError(Exception):
    """A billing operation that could not be done; `user_message` is safe to show the user."""

    def __init__(self, description: str, user_message: str | None = None):
        super().__init__(description)
        self.description = description
        self.user_message = user_message or description


class InsufficientCredits(BillingError):
    """The balance is smaller than the amount asked for; nothing was changed."""

    def __init__(self, *, balance: int, requested: int):
        super().__init__(
            f"balance {balance} is below the {requested} credits requested",
            ngettext(
                "You need %(requested)d credit but have %(balance)d.",
                "You need %(requested)d credits but have %(balance)d.",
                requested,
            )
            % {"requested": requested, "balance": balance},
        )
        self.balance = balance
        self.requested = requested


class IdempotencyKeyReused(BillingError):
    """An idempotency key was sent again with a different operation than the first time."""


class AppendOnlyViolation(Exception):
    """Something tried to change or remove a ledger entry."""
