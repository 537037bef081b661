"""Saved cards: a Stripe Customer per profile, one saved card per profile, and buying with it.

The flow (docs/INSTALL.md, "Saved cards"):

1. `start_card_setup` makes sure the profile has its Stripe Customer and creates a SetupIntent
   for it (usage off_session); the page confirms it with Stripe.js `confirmCardSetup`, which runs
   3-D Secure when the bank wants it.
2. `save_card_from_setup` asks Stripe for that SetupIntent, refuses one that did not succeed or
   was made for another customer, and saves its card with `save_card`.
3. `buy_with_saved_card` charges the saved card through `billing.charges.start_charge` with the
   customer, so a one-click purchase (and, off-session, an auto-recharge) is a Payment settled by
   billing.fulfilment like any other.

Stripe calls stay outside database transactions (docs/DESIGN.md, "Stripe calls outside
transactions"): the database is written after Stripe has answered, and a card replaced by a newer
one is detached after the commit.
"""

from __future__ import annotations

import logging
import re
import uuid

from django.db import transaction
from django.utils.translation import gettext as _

from billing import charges, fulfilment, stripe_gateway
from billing.exceptions import InvalidCard, InvalidPaymentRequest, NoSavedCard, StripeError
from billing.models import Payment, Profile, SavedCard

logger = logging.getLogger(__name__)

SETUP_INTENT_ID = re.compile(r"seti_[A-Za-z0-9_]{1,200}")
SETUP_SUCCEEDED = "succeeded"


def saved_card(user) -> SavedCard | None:
    """The user's saved card, or None."""
    return SavedCard.objects.filter(profile__user_id=user.pk).first()


def customer_for(user) -> str:
    """The profile's Stripe Customer id, creating the Customer the first time.

    Two first saves at once may both ask Stripe; only one id is ever recorded (the conditional
    UPDATE below), and the loser uses the winner's. Real Stripe answers both with the same Customer
    (the idempotency key is the profile's); where keys are not honoured, the loser's Customer is
    left unused at Stripe, holding no card, which is harmless.
    """
    profile = _profile(user)
    if profile.stripe_customer_id:
        return profile.stripe_customer_id
    created = stripe_gateway.create_customer(
        email=getattr(user, "email", "") or "",
        metadata={"user_id": user.pk, "profile_id": profile.pk},
        idempotency_key=customer_idempotency_key(profile),
    )
    won = Profile.objects.filter(pk=profile.pk, stripe_customer_id="").update(stripe_customer_id=created)
    if won:
        return created
    recorded = Profile.objects.values_list("stripe_customer_id", flat=True).get(pk=profile.pk)
    if recorded != created:
        logger.warning("profile %s: Stripe customer %s unused, %s was recorded first", profile.pk, created, recorded)
    return recorded


def customer_idempotency_key(profile: Profile) -> str:
    # The creation time keeps a reset development database's reused ids from replaying another
    # profile's Customer at a shared Stripe test account (keys live 24 h there).
    return f"profile:{profile.pk}:{profile.created_at:%Y%m%d%H%M%S%f}:customer"


def start_card_setup(user) -> stripe_gateway.SetupIntent:
    """A SetupIntent for the user's Customer; its client_secret is for Stripe.js confirmCardSetup."""
    customer = customer_for(user)
    return stripe_gateway.create_setup_intent(
        customer=customer,
        metadata={"user_id": user.pk},
        idempotency_key=f"customer:{customer}:setup:{uuid.uuid4().hex}",
    )


def save_card_from_setup(user, setup_intent_id) -> SavedCard:
    """Save the card of a SetupIntent the page confirmed. Raises InvalidCard for a malformed id,
    a SetupIntent that did not succeed, or one that is not this user's."""
    if not isinstance(setup_intent_id, str) or not SETUP_INTENT_ID.fullmatch(setup_intent_id):
        raise InvalidCard("setup_intent missing or malformed", _("The card setup is missing. Try again."))
    customer = _profile(user).stripe_customer_id
    try:
        setup = stripe_gateway.retrieve_setup_intent(setup_intent_id)
    except InvalidPaymentRequest as unknown:
        raise InvalidCard(f"setup intent {setup_intent_id}: {unknown.description}") from unknown
    if not customer or setup.customer != customer:
        # Another user's SetupIntent reads as an unknown one: nothing about it is revealed.
        raise InvalidCard(f"setup intent {setup.id} belongs to {setup.customer}, not {customer or 'nobody'}")
    if setup.status != SETUP_SUCCEEDED or not setup.payment_method:
        raise InvalidCard(f"setup intent {setup.id} is {setup.status}", _("Your card was not confirmed. Try again."))
    return save_card(user, setup.payment_method)


def save_card(user, payment_method_id) -> SavedCard:
    """Attach the card to the user's Customer at Stripe and save it, replacing (and detaching)
    any older saved card. Saving the saved card again refreshes its details.

    Raises InvalidCard for a malformed id or a card attached to another customer; CardDeclined
    when the bank refuses the card on attaching; StripeUnavailable when Stripe cannot be reached.
    """
    if not isinstance(payment_method_id, str) or not charges.PAYMENT_METHOD_ID.fullmatch(payment_method_id):
        raise InvalidCard("payment method missing or malformed")
    customer = customer_for(user)
    try:
        card = stripe_gateway.retrieve_card(payment_method_id)
    except InvalidPaymentRequest as unknown:
        raise InvalidCard(f"payment method {payment_method_id}: {unknown.description}") from unknown
    if card.customer and card.customer != customer:
        raise InvalidCard(f"payment method {card.id} belongs to customer {card.customer}, not {customer}")
    if card.customer != customer:
        card = stripe_gateway.attach_card(card.id, customer=customer)
    with transaction.atomic():
        # The profile's row lock makes concurrent saves of one user take turns.
        profile = Profile.objects.select_for_update().get(user_id=user.pk)
        replaced = SavedCard.objects.filter(profile=profile).first()
        if replaced is not None:
            replaced.delete()
        saved = SavedCard.objects.create(
            profile=profile,
            stripe_payment_method_id=card.id,
            brand=card.brand[:32],
            last4=card.last4[-4:],
            exp_month=card.exp_month,
            exp_year=card.exp_year,
        )
    if replaced is not None and replaced.stripe_payment_method_id != card.id:
        _detach_quietly(replaced.stripe_payment_method_id)
    return saved


def remove_card(card: SavedCard) -> None:
    """Detach the card at Stripe, then forget it. Raises StripeUnavailable (the card kept) when
    Stripe cannot be reached, so a card is never forgotten here while Stripe could still charge it."""
    try:
        stripe_gateway.detach_card(card.stripe_payment_method_id)
    except InvalidPaymentRequest as gone:
        # Already detached (or deleted at Stripe): nothing can charge it, so forgetting it is right.
        logger.info("saved card %s was already detached: %s", card.pk, gone.description)
    SavedCard.objects.filter(pk=card.pk).delete()


def buy_with_saved_card(user, *, pack_slug, off_session=False) -> charges.ChargeResult:
    """Buy the pack with the user's saved card (billing.charges.start_charge, with the customer).

    On-session (the default) a bank that wants 3-D Secure answers REQUIRES_ACTION as for any card;
    `off_session` is for charges made without the user (auto-recharge). Raises NoSavedCard when
    there is none; otherwise as start_charge.
    """
    card = _card_of(user)
    return charges.start_charge(
        user,
        pack_slug=pack_slug,
        payment_method=card.stripe_payment_method_id,
        customer=card.profile.stripe_customer_id,
        off_session=off_session,
    )


def charge_saved_card(payment: Payment, *, off_session=False) -> charges.ChargeResult:
    """Charge a recorded pending `payment` (billing.charges.record_payment) to its user's saved
    card: buy_with_saved_card for a caller that recorded the payment in its own transaction
    (billing.autorecharge). Raises NoSavedCard (the payment failed) when there is none."""
    try:
        card = _card_of(payment.user)
    except NoSavedCard:
        fulfilment.fail_payment(payment, message=_("There is no saved card to charge."))
        raise
    return charges.charge_payment(
        payment,
        payment_method=card.stripe_payment_method_id,
        customer=card.profile.stripe_customer_id,
        off_session=off_session,
    )


def _card_of(user) -> SavedCard:
    card = SavedCard.objects.select_related("profile").filter(profile__user_id=user.pk).first()
    if card is None:
        raise NoSavedCard(f"user {user.pk} has no saved card")
    return card


def _profile(user) -> Profile:
    return Profile.objects.get_or_create(user_id=user.pk)[0]


def _detach_quietly(payment_method_id: str) -> None:
    try:
        stripe_gateway.detach_card(payment_method_id)
    except StripeError as failed:
        # The card is no longer ours to charge; staff can detach it at Stripe if it lingers.
        logger.warning("replaced card %s not detached at Stripe: %s", payment_method_id, failed.description)
