"""Why a payment failed, in words for the customer: Stripe's decline codes and error codes
(https://docs.stripe.com/declines/codes) mapped to plain sentences. Stripe's own message stays
on the payment for staff (Payment.failure_message, shown in the admin); the customer sees only
these. Used by every place a failure reaches a customer: the charge endpoints' JSON errors and
the payment history on /billing/."""

from django.utils.translation import gettext_lazy

GENERIC = gettext_lazy("The payment did not go through. Please try again or use another card.")
TRY_ANOTHER = gettext_lazy("Your card was declined. Please use another card or contact your bank.")
AUTHENTICATION = gettext_lazy(
    "Your bank could not confirm the payment, so it was not made. Please try again and complete your bank's check."
)
CHECK_DETAILS = gettext_lazy("Some card details were not right. Please check them and try again.")
TRY_AGAIN = gettext_lazy("Something went wrong while processing your card. Please try again in a moment.")

MESSAGES = {
    # The bank said no, with no reason given to us: another card is the way out.
    "card_declined": TRY_ANOTHER,
    "generic_decline": TRY_ANOTHER,
    "do_not_honor": TRY_ANOTHER,
    "call_issuer": TRY_ANOTHER,
    "not_permitted": TRY_ANOTHER,
    "restricted_card": TRY_ANOTHER,
    "transaction_not_allowed": TRY_ANOTHER,
    "card_not_supported": gettext_lazy("Your card does not support this kind of payment. Please use another card."),
    "currency_not_supported": gettext_lazy("Your card does not support this currency. Please use another card."),
    "lost_card": TRY_ANOTHER,
    "stolen_card": TRY_ANOTHER,
    "pickup_card": TRY_ANOTHER,
    "fraudulent": TRY_ANOTHER,
    "merchant_blacklist": TRY_ANOTHER,
    "insufficient_funds": gettext_lazy("Your card has insufficient funds. Please use another card."),
    "card_velocity_exceeded": gettext_lazy(
        "Your card has reached its spending limit. Please use another card or contact your bank."
    ),
    "withdrawal_count_limit_exceeded": gettext_lazy(
        "Your card has reached its spending limit. Please use another card or contact your bank."
    ),
    "expired_card": gettext_lazy("Your card has expired. Please use another card."),
    "incorrect_cvc": gettext_lazy("The card's security code is incorrect. Please check it and try again."),
    "invalid_cvc": gettext_lazy("The card's security code is incorrect. Please check it and try again."),
    "incorrect_number": gettext_lazy("The card number is incorrect. Please check it and try again."),
    "invalid_number": gettext_lazy("The card number is incorrect. Please check it and try again."),
    "invalid_expiry_month": gettext_lazy("The card's expiry date is incorrect. Please check it and try again."),
    "invalid_expiry_year": gettext_lazy("The card's expiry date is incorrect. Please check it and try again."),
    "incorrect_zip": CHECK_DETAILS,
    "invalid_account": TRY_ANOTHER,
    "payment_intent_authentication_failure": AUTHENTICATION,
    "authentication_required": AUTHENTICATION,
    "authentication_not_handled": AUTHENTICATION,
    "processing_error": TRY_AGAIN,
    "issuer_not_available": TRY_AGAIN,
    "try_again_later": TRY_AGAIN,
    "reenter_transaction": TRY_AGAIN,
    "approve_with_id": TRY_AGAIN,
    "duplicate_transaction": gettext_lazy(
        "A payment for the same amount was just made with this card. Please check your balance before trying again."
    ),
    # Ours, not Stripe's: a payment we or Stripe canceled before it was made.
    "canceled": gettext_lazy("The payment was canceled; nothing was charged."),
}


def customer_message(code: str | None) -> str:
    """The sentence a customer sees for Stripe's `code` (a decline code or an error code); a
    general one for a code this table does not know, or none."""
    return str(MESSAGES.get(code or "", GENERIC))


def error_code(error) -> str | None:
    """Stripe's decline code, else its error code, from an error object such as an intent's
    last_payment_error (None when it has neither)."""
    if not isinstance(error, dict):
        return None
    code = error.get("decline_code") or error.get("code")
    return code[:100] if isinstance(code, str) and code else None
