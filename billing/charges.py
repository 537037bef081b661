"""Buying a pack: start a charge, finish it after 3-D Secure, and apply what Stripe says.

The flow (README, "Architecture"; docs/DESIGN.md), with no Stripe call inside a database transaction:

1. `start_charge` validates what the client sent (a pack slug and a payment method id, never a
   price), records a pending `Payment` whose credits and amount are copied from the pack, and
   commits it.
2. Outside any transaction it asks Stripe to create and confirm a PaymentIntent for that
   amount, with the idempotency key `payment:<reference>:intent` (`Payment.reference`, unique
   per installation, keeps a reset development database's reused ids from replaying old intents
   at a shared Stripe test account, which keeps keys for 24 h) and metadata naming the payment,
   so the webhook and `reconcile_payments` can find our payment from the intent.
3. Stripe's answer goes to `billing.fulfilment` (credit, 3-D Secure, or fail), which is
   idempotent and locks the payment, so the webhook arriving first, later or at the same
   moment changes nothing twice.

When Stripe cannot be reached, or its answer is lost, the payment stays pending: not lost
(it is in our database and the intent's metadata names it), not credited (Stripe has not said
it succeeded). The `payment_intent.succeeded` webhook or `reconcile_payments` settles it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from django.utils.translation import gettext as _

from billing import fulfilment, ledger, stripe_gateway
from billing.exceptions import (
    CardDeclined,
    InvalidCharge,
    InvalidPaymentRequest,
    PaymentInProgress,
    PaymentNotFound,
    PaymentNotOpen,
    StripeUnavailable,
)
from billing.models import CreditPack, Payment
from billing.stripe_gateway import IntentStatus

logger = logging.getLogger(__name__)

Status = Payment.Status
PACK_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,50}")
PAYMENT_METHOD_ID = re.compile(r"pm_[A-Za-z0-9_]{1,200}")
CARD_TOKEN_ID = re.compile(r"tok_[A-Za-z0-9_]{1,200}")


@dataclass(frozen=True)
class ChargeResult:
    """Where a payment stands after a charge or confirm request.

    status: SUCCEEDED (credited; `credits` is the new balance, `added` what the payment
    added), REQUIRES_ACTION (3-D Secure: `client_secret` for Stripe.js), or PROCESSING
    (Stripe has not decided; the webhook will settle it). A failed payment raises CardDeclined.
    """

    payment: Payment
    status: IntentStatus
    credits: int | None = None
    added: int = 0
    client_secret: str | None = None


# --- the use cases ---------------------------------------------------------------------------


def start_charge(
    user, *, pack_slug, payment_method, accept_card_tokens=False, customer: str | None = None, off_session=False
) -> ChargeResult:
    """Charge `user` for the active pack `pack_slug` with the card `payment_method` ("pm_...", or
    with `accept_card_tokens` also a legacy "tok_..." the original React client posts).

    A saved card is charged with its Stripe `customer` (billing.cards); `off_session` when the
    user is not there to authenticate (auto-recharge). Either way the payment goes through the
    same Payment and billing.fulfilment path as a card typed in.

    Raises InvalidCharge (nothing created) for bad input; CardDeclined or InvalidPaymentRequest
    (the payment recorded as failed) when Stripe refuses; StripeUnavailable (the payment left
    pending) when Stripe cannot be reached or its answer is lost. A token Stripe will not turn
    into a PaymentMethod (unknown, already used, Stripe unreachable) raises before any Payment
    exists, so nothing is left half-made.
    """
    pack = _pack_for_sale(pack_slug)
    if accept_card_tokens and isinstance(payment_method, str) and CARD_TOKEN_ID.fullmatch(payment_method):
        payment_method = stripe_gateway.create_payment_method_from_token(payment_method)
    payment_method = _payment_method_id(payment_method)
    payment = _record(user, pack, purpose=Payment.Purpose.PURCHASE)
    return charge_payment(payment, payment_method=payment_method, customer=customer, off_session=off_session)


def record_payment(user, *, pack_slug, purpose=Payment.Purpose.PURCHASE) -> Payment:
    """The first half of `start_charge` for callers that must record the payment in their own
    transaction (billing.autorecharge claims its slot with it): a pending Payment for the pack.
    Raises InvalidCharge for a pack not for sale; IntegrityError where the database refuses it."""
    return _record(user, _pack_for_sale(pack_slug), purpose=purpose)


def charge_payment(payment: Payment, *, payment_method, customer: str | None = None, off_session=False) -> ChargeResult:
    """The second half of `start_charge`: ask Stripe to charge a committed pending `payment`, outside
    any transaction, and settle its answer. Raises as start_charge."""
    pack = payment.pack
    try:
        intent = stripe_gateway.create_payment_intent(
            amount=payment.amount,
            currency=payment.currency,
            payment_method=payment_method,
            metadata={
                "payment_id": payment.pk,
                "payment_ref": payment.reference,
                "user_id": payment.user_id,
                "pack": pack.slug,
            },
            idempotency_key=intent_idempotency_key(payment),
            customer=customer,
            off_session=off_session,
        )
    except CardDeclined as declined:
        # Stripe's decline names the intent the attempt made (now requires_payment_method).
        fulfilment.fail_payment(
            payment,
            message=declined.stripe_message,
            code=declined.code,
            intent_id=declined.intent_id,
            card=(declined.card_brand, declined.card_last4),
        )
        raise
    except InvalidPaymentRequest as invalid:
        # Stripe refused the request itself (e.g. a payment method it does not know): no
        # intent exists, so nothing can succeed later.
        fulfilment.fail_payment(payment, message=invalid.user_message)
        raise
    except StripeUnavailable:
        logger.warning("payment %s left pending: Stripe unavailable during create", payment.pk)
        raise
    return apply_intent(payment, intent, source="charge")


def _record(user, pack: CreditPack, *, purpose) -> Payment:
    return Payment.objects.create(
        user=user,
        pack=pack,
        credits=pack.credits,
        amount=pack.amount,
        currency=pack.currency,
        validity_days=pack.validity_days,
        status=Status.PENDING,
        purpose=purpose,
    )


def confirm_charge(user, payment_id) -> ChargeResult:
    """The page finished 3-D Secure (or wants to know where a payment stands): ask Stripe, settle.

    Raises PaymentNotFound for anything but the user's own payment; CardDeclined when the
    payment failed (e.g. authentication refused); PaymentInProgress when we never learnt the
    intent; StripeUnavailable when Stripe cannot be reached (the payment unchanged).
    """
    payment = Payment.objects.select_related("pack").filter(pk=payment_id, user_id=user.pk).first()
    if payment is None:
        raise PaymentNotFound(f"no payment {payment_id} for user {user.pk}")
    if payment.status in fulfilment.CREDITED:
        return _result(payment)
    if not payment.stripe_payment_intent_id:
        if payment.status == Status.FAILED:
            raise CardDeclined(
                f"payment {payment.pk} failed", payment.customer_failure_message, code=payment.failure_code
            )
        raise PaymentInProgress(f"payment {payment.pk} has no intent yet")
    intent = stripe_gateway.retrieve_payment_intent(payment.stripe_payment_intent_id)
    if intent.status == IntentStatus.REQUIRES_CONFIRMATION:
        # Confirmation after authentication (manual-confirmation intents; ours confirm
        # automatically, so this is a safety net).
        intent = stripe_gateway.confirm_payment_intent(
            intent.id, idempotency_key=f"payment:{payment.reference}:confirm:{intent.id}"
        )
    return apply_intent(payment, intent, source="confirm")


def resume_charge(user, payment_id) -> ChargeResult:
    """The customer came back to a payment left in 3-D Secure (the "Finish payment" button on
    /billing/): where it stands at Stripe, with the intent's client secret while Stripe still
    waits for the bank's check. The page then runs Stripe.js and `confirm_charge`, as the checkout does.

    Raises PaymentNotFound for anything but the user's own payment; PaymentNotOpen (with the
    customer's sentence) for a payment not waiting for them: finished, failed or canceled here,
    or found so at Stripe (which is then applied, once, through billing.fulfilment);
    StripeUnavailable when Stripe cannot be reached (the payment unchanged).
    """
    payment = Payment.objects.select_related("pack").filter(pk=payment_id, user_id=user.pk).first()
    if payment is None:
        raise PaymentNotFound(f"no payment {payment_id} for user {user.pk}")
    if payment.status != Status.REQUIRES_ACTION or not payment.stripe_payment_intent_id:
        raise _not_open(payment)
    intent = stripe_gateway.retrieve_payment_intent(payment.stripe_payment_intent_id)
    if intent.status == IntentStatus.REQUIRES_ACTION:
        return ChargeResult(payment=payment, status=IntentStatus.REQUIRES_ACTION, client_secret=intent.client_secret)
    # Stripe moved on meanwhile (the bank answered, or the intent was canceled): record it, once.
    try:
        result = apply_intent(payment, intent, source="resume")
    except CardDeclined:
        payment.refresh_from_db(fields=["status"])
        raise _not_open(payment) from None
    if result.status == IntentStatus.REQUIRES_ACTION:
        return result
    raise _not_open(result.payment)


def _not_open(payment: Payment) -> PaymentNotOpen:
    description = f"payment {payment.pk} is {payment.status}, not waiting for 3-D Secure"
    if payment.status in fulfilment.CREDITED:
        return PaymentNotOpen(description, _("This payment is already complete: its credits are in your balance."))
    if payment.status == Status.FAILED:
        return PaymentNotOpen(
            description,
            _(
                "This payment was canceled or declined, so there is nothing left to finish. "
                "Buy the pack again to retry."
            ),
        )
    return PaymentNotOpen(description)


def intent_idempotency_key(payment: Payment) -> str:
    return f"payment:{payment.reference}:intent"


# --- applying Stripe's facts -----------------------------------------------------------------


def apply_intent(payment: Payment, intent: stripe_gateway.Intent, *, source: str) -> ChargeResult:
    """Settle `payment` from `intent` (fresh from Stripe) through billing.fulfilment and say
    where it stands. Raises CardDeclined (with the customer's sentence) when the payment failed."""
    applied = fulfilment.apply_intent(payment, intent, source=source)
    payment = applied.payment
    if applied.outcome == fulfilment.Outcome.AWAIT_ACTION and payment.status == Status.REQUIRES_ACTION:
        return ChargeResult(payment=payment, status=IntentStatus.REQUIRES_ACTION, client_secret=intent.client_secret)
    return _result(payment, available=applied.available)


def _result(payment: Payment, *, available: int | None = None) -> ChargeResult:
    if payment.status in fulfilment.CREDITED:
        return ChargeResult(
            payment=payment,
            status=IntentStatus.SUCCEEDED,
            # The balance the credit left, when the ledger said it (no second read).
            credits=available if available is not None else ledger.get_balance(payment.user),
            added=payment.credits,
        )
    if payment.status == Status.FAILED:
        raise CardDeclined(
            f"payment {payment.pk} failed: {payment.failure_message}",
            payment.customer_failure_message,
            intent_id=payment.stripe_payment_intent_id,
            code=payment.failure_code,
        )
    return ChargeResult(payment=payment, status=IntentStatus.PROCESSING)


# --- input -----------------------------------------------------------------------------------


def _pack_for_sale(slug) -> CreditPack:
    if not isinstance(slug, str) or not slug:
        raise InvalidCharge("pack missing or not a string", _("Choose a pack to buy."))
    if not PACK_SLUG.fullmatch(slug):
        raise InvalidCharge("malformed pack slug", _("That pack is not for sale."))
    pack = CreditPack.objects.filter(slug=slug, active=True).first()
    if pack is None:
        raise InvalidCharge(f"no active pack {slug!r}", _("That pack is not for sale."))
    return pack


def _payment_method_id(value) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidCharge("payment_method missing or not a string", _("Card details are missing."))
    if not PAYMENT_METHOD_ID.fullmatch(value):
        raise InvalidCharge("malformed payment method id", _("That card could not be used. Check the details."))
    return value
