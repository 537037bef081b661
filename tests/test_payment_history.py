"""The payment history on /billing/: paginated like the ledger (?payments=N, beside the ledger's
?page=N), consecutive failed attempts shown as one row, and failures in words for the customer
(billing.decline_messages), never Stripe's, which the admin keeps for staff."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from django.utils.html import escape

from billing import decline_messages
from billing.models import CreditPack, Payment
from tests.stripe_helpers import DECLINED, THREE_D_SECURE, card, complete_3ds, post_json

CHARGE = "/billing/charge/"
STRIPE_3DS_WORDS = "The provided PaymentMethod has failed authentication."


def make_payment(user, status, **fields) -> Payment:
    pack = CreditPack.objects.get(slug="starter")
    return Payment.objects.create(
        user=user, pack=pack, credits=pack.credits, amount=pack.amount, currency=pack.currency, status=status, **fields
    )


def payment_rows(response) -> list:
    return list(response.context["payments"])


def test_a_page_of_payments_with_a_pager_that_keeps_the_ledger_page(signed_in_client, user, settings):
    settings.BILLING_PAYMENTS_PAGE_SIZE = 3
    payments = [make_payment(user, Payment.Status.SUCCEEDED) for _ in range(7)]

    first = signed_in_client.get("/billing/", {"page": "1"})
    second = signed_in_client.get("/billing/", {"payments": "2"})
    last = signed_in_client.get("/billing/", {"payments": "3"})
    past = signed_in_client.get("/billing/", {"payments": "99"})

    assert [row.payment.pk for row in payment_rows(first)] == [p.pk for p in payments[::-1][:3]]
    assert [row.payment.pk for row in payment_rows(second)] == [p.pk for p in payments[::-1][3:6]]
    assert [row.payment.pk for row in payment_rows(last)] == [payments[0].pk]
    assert [row.payment.pk for row in payment_rows(past)] == [payments[0].pk]  # past the end: the last page
    html = second.content.decode()
    assert 'href="?payments=1&amp;page=1#payments"' in html
    assert 'href="?payments=3&amp;page=1#payments"' in html
    # The ledger's pager keeps the payments page, so both pagers work together.
    assert second.context["payments"].number == 2
    assert not last.context["payments"].has_next()


def test_consecutive_failed_attempts_are_one_row_with_the_last_reason(signed_in_client, user):
    bought = make_payment(user, Payment.Status.SUCCEEDED)
    for code in ["card_declined"] * 13 + ["insufficient_funds"]:
        make_payment(user, Payment.Status.FAILED, failure_message="Stripe's words", failure_code=code)
    latest = make_payment(user, Payment.Status.SUCCEEDED)
    lone_failure = make_payment(user, Payment.Status.FAILED, failure_code="expired_card", failure_message="x")

    response = signed_in_client.get("/billing/")

    rows = payment_rows(response)
    assert [(row.payment.pk, row.failed_attempts) for row in rows] == [
        (lone_failure.pk, 1),
        (latest.pk, 1),
        (rows[2].payment.pk, 14),
        (bought.pk, 1),
    ]
    html = response.content.decode()
    assert "14 failed attempts" in html
    assert escape(f"Last: {decline_messages.MESSAGES['insufficient_funds']}") in html
    assert escape(str(decline_messages.MESSAGES["expired_card"])) in html
    assert "Stripe&#x27;s words" not in html and "Stripe's words" not in html


def test_a_real_decline_and_a_failed_3ds_read_in_plain_words(localstripe, signed_in_client, user):
    declined = post_json(signed_in_client, CHARGE, {"pack": "starter", "payment_method": card(DECLINED)})
    started = post_json(signed_in_client, CHARGE, {"pack": "starter", "payment_method": card(THREE_D_SECURE)})
    payment = Payment.objects.get(pk=started.json()["payment"])
    complete_3ds(localstripe, payment.stripe_payment_intent_id, started.json()["client_secret"], success=False)
    refused = post_json(signed_in_client, f"/billing/charge/{payment.pk}/confirm/")

    assert declined.status_code == refused.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert declined.json()["error"] == decline_messages.customer_message("card_declined")
    assert refused.json()["error"] == decline_messages.customer_message("payment_intent_authentication_failure")
    html = signed_in_client.get("/billing/").content.decode()
    assert "2 failed attempts" in html
    assert escape(decline_messages.customer_message("payment_intent_authentication_failure")) in html
    assert "PaymentMethod" not in html
    payment.refresh_from_db()
    assert payment.failure_message == STRIPE_3DS_WORDS  # for staff


def test_staff_see_stripes_words_and_code_in_the_admin(admin_client, user):
    payment = make_payment(
        user,
        Payment.Status.FAILED,
        failure_message=STRIPE_3DS_WORDS,
        failure_code="payment_intent_authentication_failure",
    )
    page = admin_client.get(f"/admin/billing/payment/{payment.pk}/change/").content.decode()
    assert "The provided PaymentMethod has failed authentication." in page
    assert "payment_intent_authentication_failure" in page


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ({"code": "card_declined", "decline_code": "insufficient_funds"}, "insufficient_funds"),
        ({"code": "expired_card"}, "expired_card"),
        ({"message": "no code"}, None),
        (["not", "an", "object"], None),
        ({"code": 7}, None),
    ],
)
def test_the_decline_code_wins_over_the_error_code(error, code):
    assert decline_messages.error_code(error) == code


def test_an_unknown_or_missing_code_reads_as_a_general_failure():
    assert decline_messages.customer_message("something_new") == str(decline_messages.GENERIC)
    assert decline_messages.customer_message(None) == str(decline_messages.GENERIC)
