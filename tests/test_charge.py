"""Buying a pack through POST /billing/charge/ and /billing/charge/<id>/confirm/,
against the live localstripe: success, decline, 3-D Secure, Stripe unreachable, bad input,
CSRF, other users' payments, and the charge racing the webhook."""

from __future__ import annotations

import json
import multiprocessing
from http import HTTPStatus

import pytest
from django.conf import settings as django_settings
from django.db import OperationalError, connection
from django.test import Client

from billing import charges, decline_messages, ledger, stripe_gateway
from billing.models import CreditPack, LedgerEntry, Payment, StripeEvent
from scripts import localstripe_server
from tests import seed
from tests.conftest import run_in_processes
from tests.stripe_helpers import (
    DECLINED,
    THREE_D_SECURE,
    VISA,
    card,
    complete_3ds,
    intent_id_from_secret,
    post_json,
    signed_headers,
    wait_for,
)

CHARGE = "/billing/charge/"


def confirm_url(payment_id) -> str:
    return f"/billing/charge/{payment_id}/confirm/"


def assert_nothing_credited(user):
    assert ledger.get_balance(user) == 0
    assert not LedgerEntry.objects.filter(profile__user=user).exists()


@pytest.fixture
def starter_pack(transactional_db):
    """The migration's `starter` pack (a transactional test's flush removes migration data)."""
    return seed.starter_pack()


@pytest.fixture
def closed_stripe(settings):
    """Stripe unreachable: the API base points at a loopback port nobody listens on."""
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{localstripe_server.free_port()}"
    return settings.STRIPE_API_BASE


# --- success -------------------------------------------------------------------------------


@pytest.mark.parametrize("payment_method", ["new-visa", "pm_card_visa"])
def test_success_credits_the_pack_in_the_same_request(localstripe, signed_in_client, user, payment_method):
    pm = card(VISA) if payment_method == "new-visa" else payment_method

    response = post_json(signed_in_client, CHARGE, {"pack": "starter", "payment_method": pm})

    assert response.status_code == HTTPStatus.OK, response.content
    payment = Payment.objects.get(user=user)
    assert response.json() == {"status": "succeeded", "credits": 5, "added": 5, "payment": payment.pk}
    assert payment.status == Payment.Status.SUCCEEDED
    assert (payment.credits, payment.amount, payment.currency) == (5, 500, "usd")
    assert ledger.get_balance(user) == 5
    entry = LedgerEntry.objects.get(profile__user=user)
    assert (entry.kind, entry.delta, entry.balance_after, entry.payment_id) == ("purchase", 5, 5, payment.pk)
    # Stripe charged the pack's price and can name our payment.
    intent = stripe_gateway.retrieve_payment_intent(payment.stripe_payment_intent_id)
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 500, "usd")
    assert intent.metadata == {
        "payment_id": str(payment.pk),
        "payment_ref": payment.reference,
        "user_id": str(user.pk),
        "pack": "starter",
    }


def test_client_cannot_name_the_price(localstripe, signed_in_client, user):
    body = {"pack": "starter", "payment_method": card(VISA), "amount": 1, "credits": 1000, "currency": "jpy"}
    response = post_json(signed_in_client, CHARGE, body)
    assert response.status_code == HTTPStatus.OK
    assert response.json()["added"] == 5
    payment = Payment.objects.get(user=user)
    assert stripe_gateway.retrieve_payment_intent(payment.stripe_payment_intent_id).amount == 500
    assert ledger.get_balance(user) == 5


def test_each_pack_charges_its_own_price(localstripe, signed_in_client, user):
    CreditPack.objects.create(slug="big", name="Big", credits=50, amount=4000, currency="eur")
    response = post_json(signed_in_client, CHARGE, {"pack": "big", "payment_method": card(VISA)})
    assert response.json()["credits"] == 50
    intent = stripe_gateway.retrieve_payment_intent(Payment.objects.get(user=user).stripe_payment_intent_id)
    assert (intent.amount, intent.currency) == (4000, "eur")


# --- decline -------------------------------------------------------------------------------


@pytest.mark.parametrize("payment_method", ["new-declining-card", "pm_card_chargeCustomerFail"])
def test_decline_answers_402_in_words_for_the_customer(localstripe, signed_in_client, user, payment_method):
    pm = card(DECLINED) if payment_method == "new-declining-card" else payment_method

    response = post_json(signed_in_client, CHARGE, {"pack": "starter", "payment_method": pm})

    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert response.json() == {"error": str(decline_messages.MESSAGES["card_declined"])}
    payment = Payment.objects.get(user=user)
    assert payment.status == Payment.Status.FAILED
    # Stripe's own words stay for staff, with its code.
    assert (payment.failure_message, payment.failure_code) == ("Your card was declined.", "card_declined")
    # Stripe's decline names the intent the attempt made: the payment keeps it for staff and reconcile.
    intent = stripe_gateway.retrieve_payment_intent(payment.stripe_payment_intent_id)
    assert (intent.status, intent.metadata["payment_id"]) == ("requires_payment_method", str(payment.pk))
    assert_nothing_credited(user)


def test_confirming_a_declined_payment_answers_402_and_credits_nothing(localstripe, signed_in_client, user):
    post_json(signed_in_client, CHARGE, {"pack": "starter", "payment_method": card(DECLINED)})
    payment = Payment.objects.get(user=user)
    response = post_json(signed_in_client, confirm_url(payment.pk))
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert response.json() == {"error": str(decline_messages.MESSAGES["card_declined"])}
    assert_nothing_credited(user)


# --- 3-D Secure ----------------------------------------------------------------------------


def start_3ds(client, user):
    response = post_json(client, CHARGE, {"pack": "starter", "payment_method": card(THREE_D_SECURE)})
    assert response.status_code == HTTPStatus.OK, response.content
    body = response.json()
    payment = Payment.objects.get(user=user)
    assert body == {"status": "requires_action", "client_secret": body["client_secret"], "payment": payment.pk}
    assert intent_id_from_secret(body["client_secret"]) == payment.stripe_payment_intent_id
    assert payment.status == Payment.Status.REQUIRES_ACTION
    assert_nothing_credited(user)
    return payment, body["client_secret"]


def test_3ds_requires_action_then_confirm_credits_once(localstripe, signed_in_client, user):
    payment, secret = start_3ds(signed_in_client, user)

    complete_3ds(localstripe, payment.stripe_payment_intent_id, secret, success=True)
    first = post_json(signed_in_client, confirm_url(payment.pk))
    again = post_json(signed_in_client, confirm_url(payment.pk))

    expected = {"status": "succeeded", "credits": 5, "added": 5, "payment": payment.pk}
    assert (first.status_code, first.json()) == (HTTPStatus.OK, expected)
    assert (again.status_code, again.json()) == (HTTPStatus.OK, expected)
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    assert ledger.get_balance(user) == 5
    assert LedgerEntry.objects.filter(payment=payment).count() == 1


def test_confirm_before_authenticating_still_requires_action(localstripe, signed_in_client, user):
    payment, secret = start_3ds(signed_in_client, user)
    response = post_json(signed_in_client, confirm_url(payment.pk))
    assert response.status_code == HTTPStatus.OK
    assert response.json() == {"status": "requires_action", "client_secret": secret, "payment": payment.pk}
    assert_nothing_credited(user)


def test_3ds_refused_by_the_bank_fails_the_payment(localstripe, signed_in_client, user):
    payment, secret = start_3ds(signed_in_client, user)

    complete_3ds(localstripe, payment.stripe_payment_intent_id, secret, success=False)
    response = post_json(signed_in_client, confirm_url(payment.pk))

    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert response.json() == {"error": str(decline_messages.MESSAGES["payment_intent_authentication_failure"])}
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED
    assert payment.failure_message == "The provided PaymentMethod has failed authentication."
    assert_nothing_credited(user)


# --- Stripe unreachable --------------------------------------------------------------------


def test_stripe_unreachable_answers_503_and_keeps_the_payment_pending(
    localstripe, closed_stripe, signed_in_client, user
):
    response = post_json(signed_in_client, CHARGE, {"pack": "starter", "payment_method": "pm_card_visa"})

    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert "try again" in response.json()["error"]
    payment = Payment.objects.get(user=user)  # not lost
    assert (payment.status, payment.stripe_payment_intent_id, payment.amount) == ("pending", None, 500)
    assert_nothing_credited(user)

    # The page asking about it meanwhile learns it is not settled yet, and nothing changes.
    response = post_json(signed_in_client, confirm_url(payment.pk))
    assert response.status_code == HTTPStatus.CONFLICT
    assert "still being processed" in response.json()["error"]
    payment.refresh_from_db()
    assert payment.status == "pending"
    assert_nothing_credited(user)


def test_stripe_unreachable_during_confirm_answers_503_and_changes_nothing(
    localstripe, settings, signed_in_client, user
):
    payment, secret = start_3ds(signed_in_client, user)
    complete_3ds(localstripe, payment.stripe_payment_intent_id, secret, success=True)
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{localstripe_server.free_port()}"

    response = post_json(signed_in_client, confirm_url(payment.pk))

    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REQUIRES_ACTION
    assert_nothing_credited(user)


# --- bad input: 400, nothing created, Stripe never asked (it is unreachable here) ----------------

BAD_BODIES = {
    "not json": b"pack=starter&payment_method=pm_card_visa",
    "invalid utf-8": b'{"pack": "\xff\xfe"}',
    "json list": b'["starter", "pm_card_visa"]',
    "json string": b'"starter"',
    "json null": b"null",
    "empty body": b"",
    "empty object": b"{}",
    "missing pack": json.dumps({"payment_method": "pm_card_visa"}).encode(),
    "missing payment method": json.dumps({"pack": "starter"}).encode(),
    "pack is a number": json.dumps({"pack": 1, "payment_method": "pm_card_visa"}).encode(),
    "pack is huge number": json.dumps({"pack": 10**100, "payment_method": "pm_card_visa"}).encode(),
    "pack is a list": json.dumps({"pack": ["starter"], "payment_method": "pm_card_visa"}).encode(),
    "pack is null": json.dumps({"pack": None, "payment_method": "pm_card_visa"}).encode(),
    "payment method is a number": json.dumps({"pack": "starter", "payment_method": 4242}).encode(),
    "payment method is an object": json.dumps({"pack": "starter", "payment_method": {"id": "pm_x"}}).encode(),
    "unknown pack": json.dumps({"pack": "platinum", "payment_method": "pm_card_visa"}).encode(),
    "inactive pack": json.dumps({"pack": "retired", "payment_method": "pm_card_visa"}).encode(),
    "garbage pack": json.dumps({"pack": "star'; DROP TABLE--", "payment_method": "pm_card_visa"}).encode(),
    "long pack": json.dumps({"pack": "s" * 51, "payment_method": "pm_card_visa"}).encode(),
    "not a payment method id": json.dumps({"pack": "starter", "payment_method": "tok_visa"}).encode(),
    "garbage payment method": json.dumps({"pack": "starter", "payment_method": "pm_<script>"}).encode(),
    "long payment method": json.dumps({"pack": "starter", "payment_method": "pm_" + "a" * 300}).encode(),
    "huge body": json.dumps({"pack": "starter", "payment_method": "pm_card_visa", "x": "a" * 100_000}).encode(),
    "deeply nested": b'{"pack": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    "huge nested": b'{"pack": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
}


@pytest.fixture
def retired_pack(db):
    return CreditPack.objects.create(slug="retired", name="Retired", credits=1, amount=100, active=False)


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_input_answers_400_and_creates_nothing(closed_stripe, signed_in_client, user, retired_pack, body):
    response = signed_in_client.post(CHARGE, data=body, content_type="application/json")
    assert response.status_code == HTTPStatus.BAD_REQUEST, response.content
    assert isinstance(response.json()["error"], str) and response.json()["error"]
    assert not Payment.objects.exists()
    assert_nothing_credited(user)


def test_payment_method_stripe_does_not_know_answers_400(localstripe, signed_in_client, user):
    response = post_json(signed_in_client, CHARGE, {"pack": "starter", "payment_method": "pm_doesnotexist"})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["error"]
    # The attempt is on record as failed (Stripe refused it), and nothing was credited.
    assert Payment.objects.get(user=user).status == Payment.Status.FAILED
    assert_nothing_credited(user)


@pytest.mark.parametrize("url", [CHARGE, "/billing/charge/1/confirm/"])
def test_only_post_is_allowed(signed_in_client, url):
    for method in (signed_in_client.get, signed_in_client.put, signed_in_client.delete):
        response = method(url)
        assert response.status_code == HTTPStatus.METHOD_NOT_ALLOWED
        assert response["Allow"] == "POST"
    assert not Payment.objects.exists()


@pytest.mark.parametrize("url", ["/billing/charge/0/", "/billing/charge/-1/confirm/", "/billing/charge/abc/confirm/"])
def test_malformed_confirm_urls_are_404(signed_in_client, url):
    assert post_json(signed_in_client, url).status_code == HTTPStatus.NOT_FOUND


# --- who may do what -----------------------------------------------------------------------


@pytest.mark.parametrize("url", [CHARGE, "/billing/charge/1/confirm/"])
def test_anonymous_gets_401_json(db, closed_stripe, client, url):
    response = post_json(client, url, {"pack": "starter", "payment_method": "pm_card_visa"})
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.json() == {"error": "Sign in first."}
    assert not Payment.objects.exists()


def test_csrf_is_enforced(localstripe, user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    body = {"pack": "starter", "payment_method": "pm_card_visa"}

    refused = post_json(browser, CHARGE, body)
    assert refused.status_code == HTTPStatus.FORBIDDEN
    assert not Payment.objects.exists()

    browser.get("/billing/")  # sets the csrftoken cookie, as the page does
    token = browser.cookies["csrftoken"].value
    assert post_json(browser, CHARGE, body, HTTP_X_CSRFTOKEN="wrong" * 8).status_code == HTTPStatus.FORBIDDEN
    assert not Payment.objects.exists()

    accepted = post_json(browser, CHARGE, body, HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == HTTPStatus.OK
    assert ledger.get_balance(user) == 5


def test_csrf_is_enforced_on_confirm(localstripe, signed_in_client, user):
    payment, secret = start_3ds(signed_in_client, user)
    complete_3ds(localstripe, payment.stripe_payment_intent_id, secret)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert post_json(browser, confirm_url(payment.pk)).status_code == HTTPStatus.FORBIDDEN
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REQUIRES_ACTION
    assert_nothing_credited(user)


def test_another_users_payment_is_404(localstripe, client, user, other_user):
    client.force_login(user)
    payment, secret = start_3ds(client, user)
    complete_3ds(localstripe, payment.stripe_payment_intent_id, secret)

    client.force_login(other_user)
    response = post_json(client, confirm_url(payment.pk))

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert response.json() == {"error": "No such payment."}
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REQUIRES_ACTION  # not settled by a stranger's request
    assert_nothing_credited(user)
    assert_nothing_credited(other_user)


@pytest.mark.parametrize("payment_id", [999_999, 2**63 - 1, 10**30])
def test_unknown_payment_id_is_404(closed_stripe, signed_in_client, payment_id):
    response = post_json(signed_in_client, confirm_url(payment_id))
    assert response.status_code == HTTPStatus.NOT_FOUND
    assert response.json() == {"error": "No such payment."}


# --- the webhook localstripe sends, after the charge already credited ---------------------------


@pytest.fixture
def webhook_to(settings, starter_pack):
    """A localstripe of this test's own, delivering its webhooks to the URL given.

    Not the session's instance: localstripe sends each event about a second after it happens,
    to whatever is registered then, so events from earlier tests would arrive here too (and on
    SQLite, live_server's thread shares the test's in-memory connection, so a stray webhook
    running in the middle of a charge request collides with it).
    """
    proc, base = localstripe_server.start()
    settings.STRIPE_API_BASE = base

    def register(url):
        localstripe_server.register_webhook(
            base,
            name="site",
            url=url,
            secret=settings.STRIPE_WEBHOOK_SECRET,
            events=["payment_intent.succeeded", "payment_intent.payment_failed"],
        )

    try:
        yield register
    finally:
        localstripe_server.stop(proc)


def settled(read):
    """`read()` once no webhook is mid-transaction, else None (poll again).

    On SQLite, live_server's threads share the test's in-memory database: a read can see a
    webhook's uncommitted work, or find its table locked. PostgreSQL needs none of this.
    """
    if connection.in_atomic_block:
        return None
    try:
        return read()
    except OperationalError:  # "database table is locked" (SQLite shared cache)
        return None


def test_webhook_arriving_after_the_charge_credits_nothing_more(live_server, webhook_to, user):
    webhook_to(f"{live_server.url}/billing/webhook/")
    browser = Client()
    browser.force_login(user)

    response = post_json(browser, CHARGE, {"pack": "starter", "payment_method": card(VISA)})
    assert response.json()["status"] == "succeeded"
    payment = Payment.objects.get(user=user)

    def after_the_webhook():
        event = StripeEvent.objects.filter(
            type="payment_intent.succeeded", payload__data__object__id=payment.stripe_payment_intent_id
        ).first()
        if event is None or event.status == StripeEvent.Status.RECEIVED:
            return None
        payment.refresh_from_db()
        return event, payment.status, LedgerEntry.objects.filter(payment=payment).count(), ledger.get_balance(user)

    event, status, entries, balance = wait_for(
        lambda: settled(after_the_webhook), message="localstripe's payment_intent.succeeded webhook"
    )
    assert event.status == StripeEvent.Status.PROCESSED, event.error
    assert (status, entries, balance) == (Payment.Status.SUCCEEDED, 1, 5)


def test_failed_webhook_after_a_decline_names_the_payment(live_server, webhook_to, user):
    """localstripe's decline names no intent; the payment_failed webhook attaches it by metadata."""
    webhook_to(f"{live_server.url}/billing/webhook/")
    browser = Client()
    browser.force_login(user)

    response = post_json(browser, CHARGE, {"pack": "starter", "payment_method": card(DECLINED)})
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    payment = Payment.objects.get(user=user)

    def after_the_webhook():
        payment.refresh_from_db()
        if not payment.stripe_payment_intent_id:
            return None
        return payment.status, LedgerEntry.objects.filter(profile__user=user).count(), ledger.get_balance(user)

    status, entries, balance = wait_for(
        lambda: settled(after_the_webhook), message="payment_intent.payment_failed to name the intent"
    )
    assert (status, entries, balance) == (Payment.Status.FAILED, 0, 0)


# --- race: the confirm path and the webhook path at the same moment (PostgreSQL) -------------------

_barrier = None


def _confirm_in_child(user_id, payment_id):
    from accounts.models import User

    _barrier.wait(timeout=30)
    result = charges.confirm_charge(User.objects.get(pk=user_id), payment_id)
    return result.status


def _webhook_in_child(payload, headers):
    _barrier.wait(timeout=30)
    response = Client().post("/billing/webhook/", data=payload, content_type="application/json", **headers)
    return response.status_code


@pytest.mark.postgres
def test_confirm_and_webhook_racing_credit_once(localstripe, starter_pack, user):
    global _barrier
    browser = Client()
    browser.force_login(user)
    payment, secret = start_3ds(browser, user)
    complete_3ds(localstripe, payment.stripe_payment_intent_id, secret)
    # The real event localstripe recorded, delivered several times (distinct ids, as separate events are).
    events = stripe_gateway.client().v1.events.list(params={"limit": 100}).data
    event = next(
        e.to_dict()
        for e in events
        if e.type == "payment_intent.succeeded" and e.data.object.id == payment.stripe_payment_intent_id
    )
    jobs = []
    for i in range(3):
        payload = json.dumps({**event, "id": f"{event['id']}_{i}"}).encode()
        jobs.append((_webhook_in_child, (payload, signed_headers(payload, django_settings.STRIPE_WEBHOOK_SECRET))))
        jobs.append((_confirm_in_child, (user.pk, payment.pk)))
    _barrier = multiprocessing.get_context("fork").Barrier(len(jobs))

    results = run_in_processes(_dispatch, jobs)

    assert sorted(map(str, results)) == sorted(["200"] * 3 + ["succeeded"] * 3)
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    assert LedgerEntry.objects.filter(payment=payment).count() == 1
    assert ledger.get_balance(user) == 5
    assert StripeEvent.objects.filter(status=StripeEvent.Status.PROCESSED).count() == 3


def _dispatch(target, args):
    return target(*args)
