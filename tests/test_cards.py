"""Saved cards against the live localstripe: the Stripe Customer made once, saving through a
SetupIntent, the card on the page, buying with it (credited once), a card that declines when
charged, removing (detached at Stripe), another user's SetupIntent, and bad input on every endpoint."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from django.test import Client

from billing import cards, ledger, stripe_gateway
from billing.models import LedgerEntry, Payment, Profile, SavedCard
from tests.stripe_helpers import DECLINED, THREE_D_SECURE, VISA, card, complete_3ds, intent_id_from_secret, post_json

MASTERCARD = "5555555555554444"
SETUP = "/billing/cards/setup/"
SAVE = "/billing/cards/"
REMOVE = "/billing/cards/remove/"
CHARGE = "/billing/charge/"


def confirmed_setup(client, number: str = VISA) -> str:
    """What the page does: ask for a SetupIntent, confirm it at Stripe (Stripe.js confirmCardSetup
    does this in the browser) with a new card, and answer its id."""
    answer = post_json(client, SETUP)
    assert answer.status_code == HTTPStatus.OK, answer.content
    setup_id = answer.json()["setup_intent"]
    assert answer.json()["client_secret"].startswith(f"{setup_id}_secret_")
    stripe_gateway.client().v1.setup_intents.confirm(setup_id, params={"payment_method": card(number)})
    return setup_id


def save(client, number: str = VISA):
    return post_json(client, SAVE, {"setup_intent": confirmed_setup(client, number)})


def attached_to(payment_method_id: str) -> str | None:
    return stripe_gateway.retrieve_card(payment_method_id).customer


# --- the customer ----------------------------------------------------------------------------


def test_the_customer_is_created_once_per_profile(localstripe, user):
    first = cards.customer_for(user)
    assert first.startswith("cus_")
    assert cards.customer_for(user) == first
    assert Profile.objects.get(user=user).stripe_customer_id == first
    customer = stripe_gateway.client().v1.customers.retrieve(first)
    assert customer.email == user.email
    assert customer.metadata["user_id"] == str(user.pk)


def test_a_customer_recorded_meanwhile_wins_and_the_late_one_is_not_recorded(localstripe, user, monkeypatch):
    """Two first saves at once: the one whose conditional UPDATE lands first is kept."""
    winner = stripe_gateway.create_customer(email=user.email, metadata={}, idempotency_key="winner")
    create = stripe_gateway.create_customer

    def another_request_records_first(**kwargs):
        created = create(**kwargs)
        Profile.objects.filter(user=user).update(stripe_customer_id=winner)
        return created

    monkeypatch.setattr(stripe_gateway, "create_customer", another_request_records_first)
    assert cards.customer_for(user) == winner
    assert Profile.objects.get(user=user).stripe_customer_id == winner


# --- saving, showing, buying, removing -------------------------------------------------------


def test_save_show_buy_once_and_remove(localstripe, signed_in_client, user):
    saved = save(signed_in_client)

    assert saved.status_code == HTTPStatus.CREATED, saved.content
    assert saved.json() == {"card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034}}
    card_row = SavedCard.objects.get(profile__user=user)
    customer = Profile.objects.get(user=user).stripe_customer_id
    assert attached_to(card_row.stripe_payment_method_id) == customer
    assert cards.saved_card(user) == card_row

    page = signed_in_client.get("/billing/").content.decode()
    assert "•••• 4242" in page
    assert "12/2034" in page
    assert 'data-buy-saved="starter"' in page

    bought = post_json(signed_in_client, CHARGE, {"pack": "starter", "saved_card": True})
    assert bought.status_code == HTTPStatus.OK, bought.content
    payment = Payment.objects.get(user=user)
    assert bought.json() == {"status": "succeeded", "credits": 5, "added": 5, "payment": payment.pk}
    intent = stripe_gateway.client().v1.payment_intents.retrieve(payment.stripe_payment_intent_id)
    assert (intent.customer, intent.payment_method) == (customer, card_row.stripe_payment_method_id)
    assert LedgerEntry.objects.filter(payment=payment).count() == 1
    # Asking again about the same payment credits nothing more.
    assert post_json(signed_in_client, f"/billing/charge/{payment.pk}/confirm/").json()["credits"] == 5
    assert ledger.get_balance(user) == 5

    removed = post_json(signed_in_client, REMOVE)
    assert removed.status_code == HTTPStatus.OK
    assert removed.json() == {"removed": True}
    assert not SavedCard.objects.exists()
    assert attached_to(card_row.stripe_payment_method_id) is None
    page = signed_in_client.get("/billing/").content.decode()
    assert "Save a card" in page
    assert "data-buy-saved" not in page


def test_a_new_card_replaces_the_saved_one_and_the_old_is_detached(localstripe, signed_in_client, user):
    save(signed_in_client)
    old = SavedCard.objects.get().stripe_payment_method_id
    assert save(signed_in_client, MASTERCARD).status_code == HTTPStatus.CREATED
    new = SavedCard.objects.get()
    assert new.stripe_payment_method_id != old
    assert attached_to(old) is None
    assert attached_to(new.stripe_payment_method_id) == Profile.objects.get(user=user).stripe_customer_id


def test_a_card_that_declines_when_charged_is_saved_then_declined(localstripe, signed_in_client, user):
    assert save(signed_in_client, DECLINED).status_code == HTTPStatus.CREATED
    declined = post_json(signed_in_client, CHARGE, {"pack": "starter", "saved_card": True})
    assert declined.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert "declined" in declined.json()["error"]
    assert Payment.objects.get(user=user).status == Payment.Status.FAILED
    assert ledger.get_balance(user) == 0
    assert SavedCard.objects.filter(profile__user=user).exists()  # the card stays; the user decides


def test_a_saved_card_that_wants_3d_secure_goes_through_the_same_flow(localstripe, signed_in_client, user):
    # Set up without the bank's challenge here (the server-side confirm cannot answer it).
    cards.save_card(user, card(THREE_D_SECURE))
    answer = post_json(signed_in_client, CHARGE, {"pack": "starter", "saved_card": True})
    assert answer.json()["status"] == "requires_action"
    secret = answer.json()["client_secret"]
    complete_3ds(localstripe, intent_id_from_secret(secret), secret)
    confirmed = post_json(signed_in_client, f"/billing/charge/{answer.json()['payment']}/confirm/")
    assert confirmed.json()["status"] == "succeeded"
    assert ledger.get_balance(user) == 5


def test_an_off_session_charge_goes_through_the_same_payment_path(localstripe, signed_in_client, user):
    save(signed_in_client)
    result = cards.buy_with_saved_card(user, pack_slug="starter", off_session=True)
    assert result.status == "succeeded"
    assert result.payment.status == Payment.Status.SUCCEEDED
    assert ledger.get_balance(user) == 5


def test_save_card_service_refuses_another_customers_card(localstripe, user, other_user):
    theirs = card(VISA)
    stripe_gateway.attach_card(theirs, customer=cards.customer_for(other_user))
    with pytest.raises(cards.InvalidCard):
        cards.save_card(user, theirs)
    assert not SavedCard.objects.exists()
    mine = cards.save_card(user, card(VISA))
    assert (mine.last4, mine.profile.user) == ("4242", user)


# --- other users and bad input ---------------------------------------------------------------


def test_another_users_setup_intent_is_refused(localstripe, client, user, other_user):
    client.force_login(other_user)
    theirs = confirmed_setup(client)
    client.force_login(user)
    cards.customer_for(user)  # alice has a customer of her own, just not that one
    refused = post_json(client, SAVE, {"setup_intent": theirs})
    assert refused.status_code == HTTPStatus.BAD_REQUEST
    assert refused.json() == {"error": "That card could not be saved. Try again."}
    assert not SavedCard.objects.exists()


def test_an_unconfirmed_setup_intent_is_refused(localstripe, signed_in_client):
    setup_id = post_json(signed_in_client, SETUP).json()["setup_intent"]
    refused = post_json(signed_in_client, SAVE, {"setup_intent": setup_id})
    assert refused.status_code == HTTPStatus.BAD_REQUEST
    assert refused.json() == {"error": "Your card was not confirmed. Try again."}
    assert not SavedCard.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        {"setup_intent": None},
        {"setup_intent": 7},
        {"setup_intent": ""},
        {"setup_intent": "pm_card_visa"},
        {"setup_intent": "seti_" + "x" * 300},
        {"setup_intent": "seti_unknown"},
        {"setup_intent": "seti_1'; drop table"},
    ],
)
def test_bad_input_to_save_is_answered_400_json(localstripe, signed_in_client, body):
    answer = post_json(signed_in_client, SAVE, body)
    assert answer.status_code == HTTPStatus.BAD_REQUEST
    assert isinstance(answer.json()["error"], str)
    assert not SavedCard.objects.exists()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"pack": "starter", "saved_card": "yes"}, HTTPStatus.BAD_REQUEST),
        ({"pack": "starter", "saved_card": 1}, HTTPStatus.BAD_REQUEST),
        ({"pack": "starter", "saved_card": False}, HTTPStatus.BAD_REQUEST),
        ({"pack": "starter", "saved_card": True, "payment_method": "pm_card_visa"}, HTTPStatus.BAD_REQUEST),
        ({"pack": "nope", "saved_card": True}, HTTPStatus.BAD_REQUEST),
        ({"saved_card": True}, HTTPStatus.BAD_REQUEST),
    ],
)
def test_bad_input_to_buy_with_the_saved_card(localstripe, signed_in_client, body, status):
    save(signed_in_client)
    answer = post_json(signed_in_client, CHARGE, body)
    assert answer.status_code == status
    assert isinstance(answer.json()["error"], str)
    assert not Payment.objects.exists()


def test_buying_or_removing_with_no_saved_card_is_404(localstripe, signed_in_client):
    bought = post_json(signed_in_client, CHARGE, {"pack": "starter", "saved_card": True})
    assert bought.status_code == HTTPStatus.NOT_FOUND
    assert bought.json() == {"error": "You have no saved card. Save a card first."}
    assert post_json(signed_in_client, REMOVE).status_code == HTTPStatus.NOT_FOUND
    assert not Payment.objects.exists()


@pytest.mark.parametrize("url", [SETUP, SAVE, REMOVE])
def test_card_endpoints_want_a_signed_in_post(db, client, user, url):
    anonymous = post_json(client, url, {})
    assert anonymous.status_code == HTTPStatus.UNAUTHORIZED
    assert anonymous.json() == {"error": "Sign in first."}
    client.force_login(user)
    got = client.get(url)
    assert got.status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert got["Allow"] == "POST"


@pytest.mark.parametrize("url", [SETUP, SAVE, REMOVE])
def test_card_endpoints_enforce_csrf(localstripe, user, url):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert post_json(browser, url, {}).status_code == HTTPStatus.FORBIDDEN
    assert Profile.objects.get(user=user).stripe_customer_id == ""


def test_card_endpoints_are_rate_limited(localstripe, signed_in_client, settings):
    settings.BILLING_CHARGE_RATE_LIMIT = "2/60"
    assert post_json(signed_in_client, SETUP).status_code == HTTPStatus.OK
    assert post_json(signed_in_client, SAVE, {}).status_code == HTTPStatus.BAD_REQUEST
    limited = post_json(signed_in_client, SETUP)
    assert limited.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert limited["Retry-After"]
