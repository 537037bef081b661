"""Finishing a payment left in 3-D Secure from its row on /billing/ (billing.charges.resume_charge,
POST /billing/charge/<id>/resume/), against the live localstripe: the client secret for the
owner only, a clear 404 or 409 otherwise, and the payment credited once whichever of the page,
the webhook and reconcile gets there first."""

from __future__ import annotations

import json
import multiprocessing
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.conf import settings as django_settings
from django.test import Client

from billing import abandoned, charges, ledger, reconcile, stripe_gateway
from billing.models import LedgerEntry, Payment
from tests import seed
from tests.conftest import run_in_processes
from tests.stripe_helpers import THREE_D_SECURE, VISA, card, complete_3ds, post_json, signed_headers

CHARGE = "/billing/charge/"


def resume_url(payment_id) -> str:
    return f"/billing/charge/{payment_id}/resume/"


def confirm_url(payment_id) -> str:
    return f"/billing/charge/{payment_id}/confirm/"


@pytest.fixture
def starter_pack(transactional_db):
    return seed.starter_pack()


def start_3ds(client, user, number=THREE_D_SECURE) -> Payment:
    response = post_json(client, CHARGE, {"pack": "starter", "payment_method": card(number)})
    assert response.status_code == HTTPStatus.OK, response.content
    assert response.json()["status"] == "requires_action"
    return Payment.objects.get(user=user, status=Payment.Status.REQUIRES_ACTION)


def test_the_owner_gets_the_client_secret_then_confirm_credits_once(localstripe, signed_in_client, user):
    payment = start_3ds(signed_in_client, user)  # ...and the customer closed the bank's window

    resumed = post_json(signed_in_client, resume_url(payment.pk))

    assert resumed.status_code == HTTPStatus.OK
    body = resumed.json()
    assert body["status"] == "requires_action" and body["payment"] == payment.pk
    assert body["client_secret"].startswith(payment.stripe_payment_intent_id + "_secret_")
    assert ledger.get_balance(user) == 0
    complete_3ds(localstripe, payment.stripe_payment_intent_id, body["client_secret"])
    confirmed = post_json(signed_in_client, confirm_url(payment.pk))
    assert (confirmed.status_code, confirmed.json()["status"]) == (HTTPStatus.OK, "succeeded")
    assert ledger.get_balance(user) == 5
    # Finished now: a second press is a sentence, not a second credit.
    again = post_json(signed_in_client, resume_url(payment.pk))
    assert again.status_code == HTTPStatus.CONFLICT
    assert again.json() == {"error": "This payment is already complete: its credits are in your balance."}
    assert LedgerEntry.objects.filter(payment=payment).count() == 1
    assert ledger.get_balance(user) == 5


def test_someone_elses_payment_is_not_found(localstripe, client, user, other_user):
    client.force_login(user)
    payment = start_3ds(client, user)
    client.force_login(other_user)

    response = post_json(client, resume_url(payment.pk))
    missing = post_json(client, resume_url(payment.pk + 1000))

    assert (response.status_code, response.json()) == (HTTPStatus.NOT_FOUND, {"error": "No such payment."})
    assert missing.status_code == HTTPStatus.NOT_FOUND
    assert "client_secret" not in response.content.decode()


def test_not_signed_in_or_not_a_post(localstripe, client, signed_in_client, user):
    payment = start_3ds(signed_in_client, user)
    assert signed_in_client.get(resume_url(payment.pk)).status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert post_json(Client(), resume_url(payment.pk)).status_code == HTTPStatus.UNAUTHORIZED


def test_a_payment_canceled_as_abandoned_answers_409_and_shows_no_button(localstripe, signed_in_client, user, settings):
    payment = start_3ds(signed_in_client, user)
    page = signed_in_client.get("/billing/").content.decode()
    assert f'data-finish-payment="{payment.pk}"' in page
    assert "Waiting for your bank's confirmation. Finish it or it will be canceled on" in page
    Payment.objects.filter(pk=payment.pk).update(created_at=payment.created_at - timedelta(hours=2))
    assert abandoned.cancel_abandoned()["canceled"] == 1

    response = post_json(signed_in_client, resume_url(payment.pk))

    assert response.status_code == HTTPStatus.CONFLICT
    assert response.json()["error"].startswith("This payment was canceled or declined, so there is nothing left")
    assert "data-finish-payment" not in signed_in_client.get("/billing/").content.decode()


def test_canceled_at_stripe_meanwhile_is_recorded_and_answers_409(localstripe, signed_in_client, user):
    payment = start_3ds(signed_in_client, user)
    stripe_gateway.cancel_payment_intent(payment.stripe_payment_intent_id, idempotency_key="test-cancel")

    response = post_json(signed_in_client, resume_url(payment.pk))

    assert response.status_code == HTTPStatus.CONFLICT
    assert "nothing left to finish" in response.json()["error"]
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED
    assert ledger.get_balance(user) == 0


def test_finished_at_the_bank_meanwhile_is_credited_once_and_answers_409(localstripe, signed_in_client, user):
    payment = start_3ds(signed_in_client, user)
    secret = post_json(signed_in_client, resume_url(payment.pk)).json()["client_secret"]
    complete_3ds(localstripe, payment.stripe_payment_intent_id, secret)  # the confirm request was lost

    response = post_json(signed_in_client, resume_url(payment.pk))

    assert response.status_code == HTTPStatus.CONFLICT
    assert response.json()["error"] == "This payment is already complete: its credits are in your balance."
    assert ledger.get_balance(user) == 5
    assert LedgerEntry.objects.filter(payment=payment).count() == 1


def test_succeeded_payments_show_no_button(localstripe, signed_in_client, user):
    response = post_json(signed_in_client, CHARGE, {"pack": "starter", "payment_method": card(VISA)})
    assert response.json()["status"] == "succeeded"
    page = signed_in_client.get("/billing/").content.decode()
    assert "data-finish-payment" not in page and "Waiting for your bank" not in page


# --- racing: the page, the webhook and reconcile at once ---------------------------------------------

_barrier = None


def _confirm_in_child(user_id, payment_id):
    from accounts.models import User

    _barrier.wait(timeout=30)
    return str(charges.confirm_charge(User.objects.get(pk=user_id), payment_id).status)


def _resume_in_child(user_id, payment_id):
    from accounts.models import User

    client = Client()
    client.force_login(User.objects.get(pk=user_id))
    _barrier.wait(timeout=30)
    return str(post_json(client, resume_url(payment_id)).status_code)


def _webhook_in_child(payload, headers):
    _barrier.wait(timeout=30)
    return str(Client().post("/billing/webhook/", data=payload, content_type="application/json", **headers).status_code)


def _reconcile_in_child(payment_id):
    _barrier.wait(timeout=30)
    payment = Payment.objects.select_related("pack", "user").get(pk=payment_id)
    return str(reconcile.settle(reconcile.investigate(payment)).action)


def _dispatch(target, args):
    return target(*args)


@pytest.mark.postgres
def test_finish_racing_the_webhook_and_reconcile_credits_once(localstripe, starter_pack, user):
    global _barrier
    browser = Client()
    browser.force_login(user)
    payment = start_3ds(browser, user)
    secret = post_json(browser, resume_url(payment.pk)).json()["client_secret"]
    complete_3ds(localstripe, payment.stripe_payment_intent_id, secret)
    events = stripe_gateway.client().v1.events.list(params={"limit": 100}).data
    event = next(
        e.to_dict()
        for e in events
        if e.type == "payment_intent.succeeded" and e.data.object.id == payment.stripe_payment_intent_id
    )
    payload = json.dumps(event).encode()
    jobs = [
        (_confirm_in_child, (user.pk, payment.pk)),
        (_confirm_in_child, (user.pk, payment.pk)),
        (_resume_in_child, (user.pk, payment.pk)),
        (_webhook_in_child, (payload, signed_headers(payload, django_settings.STRIPE_WEBHOOK_SECRET))),
        (_reconcile_in_child, (payment.pk,)),
    ]
    _barrier = multiprocessing.get_context("fork").Barrier(len(jobs))

    results = run_in_processes(_dispatch, jobs)

    assert results[:2] == [str(stripe_gateway.IntentStatus.SUCCEEDED)] * 2, results
    assert results[2] == str(HTTPStatus.CONFLICT.value)  # already complete, whoever credited it
    assert results[3] == "200"
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    assert LedgerEntry.objects.filter(payment=payment).count() == 1
    assert ledger.get_balance(user) == 5
