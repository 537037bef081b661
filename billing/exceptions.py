"""Every error a caller of `billing` is expected to catch, in one hierarchy.

Each is a `BillingError(description, user_message)` (the pattern of Zulip's billing): the
description is for logs and staff, the user message is safe to show the customer and defaults to
the class's own `default_message`. The JSON views answer each with one HTTP status, from one
table (`billing.http.ERROR_STATUS`).

    BillingError
    ├── InsufficientCredits        the balance is short (402)
    ├── IdempotencyKeyReused       a key sent again with another operation (422 where a view maps it)
    ├── HoldEnded                  a capture of a hold that was released
    ├── BadRequest                 a request body that is not a small JSON object (400)
    ├── InvalidCharge              what the client asked to buy cannot be charged (400)
    ├── PaymentNotFound            not this user's payment (404)
    ├── InvalidCard                a card or card setup that cannot be saved for this user (400)
    ├── NoSavedCard                the user has no saved card to charge or remove (404)
    ├── PaymentInProgress          the outcome is not known yet (409)
    ├── PaymentNotOpen             a payment that has nothing left to finish (409)
    ├── PaymentMismatch            Stripe's facts contradict our payment: never credit (409)
    ├── CreditingRefused           Stripe took the money, the ledger refused the credits (500)
    ├── RefundError                a refund that cannot be made (staff)
    └── StripeError                whatever Stripe answered (billing.stripe_gateway raises these)
        ├── StripeUnavailable      Stripe unreachable or failing: the outcome is unknown (503)
        ├── CardDeclined           the card was refused (402)
        ├── InvalidPaymentRequest  Stripe rejected the request itself (400)
        └── WebhookSignatureError  a webhook body that does not verify (400)

`AppendOnlyViolation` is not a BillingError: it is a bug in the caller (something tried to
change the ledger's history), never a condition to handle.
"""

from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext


class BillingError(Exception):
    """A billing operation that could not be done; `user_message` is safe to show the user."""

    default_message = _("The request could not be completed.")

    def __init__(self, description: str, user_message: str | None = None):
        super().__init__(description)
        self.description = description
        self.user_message = str(user_message or self.default_message)


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

    default_message = _("This Idempotency-Key was already used for a different request.")


class HoldEnded(BillingError):
    """The hold was released (or otherwise ended) before this capture: nothing was spent."""

    default_message = _("This reservation of credits has already ended.")


class BadRequest(BillingError):
    """The request body is not a small JSON object."""

    default_message = _("Send a JSON object.")


class InvalidCharge(BillingError):
    """What the client sent cannot be charged (unknown or inactive pack, malformed payment method)."""

    default_message = _("That pack is not for sale.")


class PaymentNotFound(BillingError):
    """No such payment for this user (another user's payments do not exist, as far as they know)."""

    default_message = _("No such payment.")


class InvalidCard(BillingError):
    """What the client sent cannot be saved as this user's card (malformed id, a setup that did not
    succeed, or one made for another customer: another user's setups do not exist, as far as they know)."""

    default_message = _("That card could not be saved. Try again.")


class NoSavedCard(BillingError):
    """The user has no saved card (never saved, or removed meanwhile)."""

    default_message = _("You have no saved card. Save a card first.")


class InvalidAutoRecharge(BillingError):
    """Auto-recharge settings that cannot be saved (no saved card, a pack not for sale, a threshold
    or monthly limit out of range); nothing was changed."""

    default_message = _("Those auto-recharge settings could not be saved.")


class PaymentInProgress(BillingError):
    """The payment's outcome is not known yet (Stripe is still working on it, or we never heard back)."""

    default_message = _("This payment is still being processed. Your credits will appear once it completes.")


class PaymentNotOpen(BillingError):
    """The customer asked to finish a payment that is no longer waiting for them (it succeeded,
    failed or was canceled): nothing to do; the user message says which."""

    default_message = _("This payment is no longer waiting for you. Reload the page to see where it stands.")


class PaymentMismatch(BillingError):
    """Stripe's facts do not match the payment (another intent, amount, currency or user): never credit."""

    default_message = _("This payment does not match our records.")


class CreditingRefused(BillingError):
    """Stripe took the money but the ledger refused to add the credits. Nothing of the fulfilment
    was written; the payment is flagged (`Payment.needs_attention`) for staff, who fix the cause
    and re-run whatever delivered the success (the webhook event from the admin, or reconcile)."""

    default_message = _(
        "Your payment went through, but we could not add the credits automatically. "
        "Our team has been alerted and will add them; you do not need to pay again."
    )

    def __init__(self, description: str, user_message: str | None = None, *, payment_id: int, why: str):
        super().__init__(description, user_message)
        self.payment_id = payment_id
        self.why = why


class RefundError(BillingError):
    """The payment cannot be refunded (not paid, already refunded, disputed, bad amount) or Stripe refused."""

    default_message = _("This payment cannot be refunded.")


# --- what Stripe answered (raised by billing.stripe_gateway only) ----------------------------


class StripeError(BillingError):
    """Stripe refused or could not answer a request."""


class StripeUnavailable(StripeError):
    """Stripe could not be reached or failed on its side; the outcome of the request is unknown."""

    default_message = _(
        "We could not reach the payment provider. Please try again in a moment; "
        "if your card was charged, the credits will be added automatically."
    )


class CardDeclined(StripeError):
    """The card was refused. `intent_id` names the PaymentIntent Stripe made for the attempt
    (None when no intent exists, e.g. a payment recorded as failed before reaching Stripe);
    `code` is Stripe's decline code or error code; `user_message` is the customer's sentence for
    it (billing.decline_messages) and `stripe_message` Stripe's own words, for staff."""

    default_message = _("The payment failed.")

    def __init__(
        self,
        description: str,
        user_message: str | None = None,
        *,
        intent_id: str | None = None,
        code: str | None = None,
        stripe_message: str | None = None,
        card_brand: str = "",
        card_last4: str = "",
    ):
        super().__init__(description, user_message)
        self.intent_id = intent_id
        self.code = code
        self.stripe_message = stripe_message or self.user_message
        self.card_brand = card_brand  # the card refused, when Stripe names it
        self.card_last4 = card_last4


class InvalidPaymentRequest(StripeError):
    """Stripe rejected the request as invalid (unknown payment method or intent, bad parameter)."""

    default_message = _("The payment provider refused the request.")

    def __init__(self, description: str, user_message: str | None = None, *, http_status: int | None = None):
        super().__init__(description, user_message)
        self.http_status = http_status


class WebhookSignatureError(StripeError):
    """A webhook whose signature, timestamp or body does not verify."""

    default_message = "Invalid payload."  # answered to Stripe, never shown to a customer


class AppendOnlyViolation(Exception):
    """Something tried to change or remove a ledger entry."""
