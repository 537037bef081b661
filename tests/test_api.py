"""The original React client's JSON API (README, "JSON API"): /api/current_user, /api/stripe, /api/logout."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from django.test import Client

from billing import ledger
from billing.models import CreditPack, LedgerEntry, Payment
from scripts import localstripe_server
from tests.stripe_helpers import DECLINED, THREE_D_SECURE, VISA, card, complete_3ds, post_json

STRIPE = "/api/stripe"


@pytest.fixture
def closed_stripe(settings):
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{localstripe_server.free_port()}"


# --- /api/current_user ---------------------------------------------------------------------


def test_current_user_is_null_when_anonymous(db, client, django_assert_max_num_queries):
    with django_assert_max_num_queries(2):
        response = client.get("/api/current_user")
    assert response.status_code == HTTPStatus.OK
    assert response["Content-Type"] == "application/json"
    assert response.content == b"null"


def test_current_user_answers_id_email_credits_in_few_queries(signed_in_client, user, django_assert_max_num_queries):
    ledger.add_credits(user, 7, kind=LedgerEntry.Kind.BONUS, reason="welcome")
    with django_assert_max_num_queries(6):
        response = signed_in_client.get("/api/current_user")
    assert response.json() == {"id": user.pk, "email": "alice@example.com", "credits": 7}


def test_current_user_is_get_only(signed_in_client):
    assert signed_in_client.post("/api/current_user").status_code == HTTPStatus.METHOD_NOT_ALLOWED


# --- /api/stripe ---------------------------------------------------------------------------


def test_stripe_charges_the_default_pack_and_answers_the_user(localstripe, signed_in_client, user):
    response = post_json(signed_in_client, STRIPE, {"id": card(VISA)})

    assert response.status_code == HTTPStatus.OK, response.content
    payment = Payment.objects.get(user=user)
    assert response.json() == {
        "id": user.pk,
        "email": "alice@example.com",
        "credits": 5,
        "payment": {"id": payment.pk, "status": "succeeded", "client_secret": None},
    }
    assert (payment.pack.slug, payment.status, payment.amount) == ("starter", "succeeded", 500)
    assert LedgerEntry.objects.get(payment=payment).delta == 5


def test_stripe_uses_the_configured_default_pack(localstripe, settings, signed_in_client, user):
    CreditPack.objects.create(slug="ten", name="Ten", credits=10, amount=900)
    settings.BILLING_DEFAULT_PACK = "ten"
    response = post_json(signed_in_client, STRIPE, {"id": "pm_card_visa", "pack": "starter", "amount": 1})
    assert response.json()["credits"] == 10
    assert Payment.objects.get(user=user).amount == 900


def test_stripe_decline_answers_like_the_charge_endpoint(localstripe, signed_in_client, user):
    response = post_json(signed_in_client, STRIPE, {"id": card(DECLINED)})
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert response.json() == {"error": "Your card was declined. Please use another card or contact your bank."}
    assert Payment.objects.get(user=user).status == Payment.Status.FAILED
    assert ledger.get_balance(user) == 0


def test_stripe_3ds_answers_the_user_with_the_payment_beside_it_then_confirm_credits(
    localstripe, signed_in_client, user
):
    response = post_json(signed_in_client, STRIPE, {"id": card(THREE_D_SECURE)})
    payment = Payment.objects.get(user=user)
    body = response.json()
    assert response.status_code == HTTPStatus.OK
    # User-shaped, so the original client's header keeps showing the balance.
    assert body == {
        "id": user.pk,
        "email": "alice@example.com",
        "credits": 0,
        "payment": {"id": payment.pk, "status": "requires_action", "client_secret": body["payment"]["client_secret"]},
    }
    assert body["payment"]["client_secret"].startswith(payment.stripe_payment_intent_id)
    assert ledger.get_balance(user) == 0

    complete_3ds(localstripe, payment.stripe_payment_intent_id, body["payment"]["client_secret"])
    confirmed = post_json(signed_in_client, f"/billing/charge/{payment.pk}/confirm/")
    assert confirmed.json() == {"status": "succeeded", "credits": 5, "added": 5, "payment": payment.pk}


def test_stripe_unreachable_answers_503(localstripe, closed_stripe, signed_in_client, user):
    response = post_json(signed_in_client, STRIPE, {"id": "pm_card_visa"})
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert response.json()["error"]
    assert Payment.objects.get(user=user).status == Payment.Status.PENDING
    assert ledger.get_balance(user) == 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"id": null}',
        b'{"id": 4242}',
        b'{"id": {"id": "pm_card_visa"}}',
        b'{"id": "card_123"}',
        b'{"id": "tok_"}',
        b'{"id": "tok_visa; drop"}',
    ],
)
def test_stripe_bad_input_answers_400_and_creates_nothing(closed_stripe, signed_in_client, user, body):
    response = signed_in_client.post(STRIPE, data=body, content_type="application/json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["error"]
    assert not Payment.objects.exists()
    assert ledger.get_balance(user) == 0


def test_stripe_when_the_default_pack_is_not_for_sale(closed_stripe, signed_in_client, user):
    CreditPack.objects.filter(slug="starter").update(active=False)
    response = post_json(signed_in_client, STRIPE, {"id": "pm_card_visa"})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert not Payment.objects.exists()


def test_stripe_anonymous_gets_401(db, closed_stripe, client):
    response = post_json(client, STRIPE, {"id": "pm_card_visa"})
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.json() == {"error": "Sign in first."}
    assert not Payment.objects.exists()


def test_stripe_enforces_csrf(closed_stripe, user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert post_json(browser, STRIPE, {"id": "pm_card_visa"}).status_code == HTTPStatus.FORBIDDEN
    assert not Payment.objects.exists()


def test_stripe_is_post_only(signed_in_client):
    assert signed_in_client.get(STRIPE).status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert not Payment.objects.exists()


# --- /api/logout ---------------------------------------------------------------------------


def test_logout_signs_out_and_redirects_home(signed_in_client):
    response = signed_in_client.get("/api/logout")
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == "/"
    assert signed_in_client.get("/api/current_user").content == b"null"


def test_logout_when_anonymous_just_redirects(db, client):
    response = client.get("/api/logout")
    assert (response.status_code, response["Location"]) == (HTTPStatus.FOUND, "/")
