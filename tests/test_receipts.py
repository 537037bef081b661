"""Receipts: the card Stripe charged recorded on every payment (whatever path settles it), one
receipt email per purchase and one notice per refund (billing.notices, claimed once in the
database), and the printable receipt page, only for its owner. Against the live localstripe."""

from __future__ import annotations

import re
from http import HTTPStatus
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.core import mail
from django.test import Client

from billing import charges, fulfilment, notices, reconcile, stripe_gateway, tasks
from billing.models import Payment, PaymentNotice
from billing.refunds import refund_payment
from tests import stripe_events as events
from tests.stripe_helpers import DECLINED, THREE_D_SECURE, VISA, card, complete_3ds, post_json

# Emails go once the credit or refund commits (on_commit), as in production: the tests of emails
# commit for real.
emails = pytest.mark.django_db(transaction=True)

CHARGE = "/billing/charge/"
SITE = "https://credits.example.com"


@pytest.fixture(autouse=True)
def _site(settings):
    settings.BILLING_SITE_URL = SITE + "/"
    settings.BILLING_SELLER_NAME = "Emaily Credits"
    settings.TIME_ZONE = "UTC"


def bought(client, user, payment_method="pm_card_visa") -> Payment:
    response = post_json(client, CHARGE, {"pack": "starter", "payment_method": payment_method})
    assert response.status_code == HTTPStatus.OK, response.content
    return Payment.objects.get(pk=response.json()["payment"])


def receipts_to(address: str) -> list:
    return [m for m in mail.outbox if m.to == [address] and "receipt" in m.subject.lower()]


def refund_notices_to(address: str) -> list:
    return [m for m in mail.outbox if m.to == [address] and m.subject.startswith("Refund of")]


def intent_for(payment: Payment, payment_method: str) -> stripe_gateway.Intent:
    """Stripe charged the payment but our answer was lost: the intent exists, the payment is pending."""
    intent = stripe_gateway.create_payment_intent(
        amount=payment.amount,
        currency=payment.currency,
        payment_method=payment_method,
        metadata={"payment_id": payment.pk, "payment_ref": payment.reference, "user_id": payment.user_id},
        idempotency_key=charges.intent_idempotency_key(payment),
    )
    assert intent.status == "succeeded"
    return intent


def pending_payment(user) -> Payment:
    return charges.record_payment(user, pack_slug="starter")


# --- the card on the payment ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payment_method", "brand", "last4", "label"),
    [
        ("pm_card_visa", "visa", "4242", "Visa \u2022\u2022\u2022\u2022 4242"),
        ("pm_card_mastercard", "mastercard", "4444", "Mastercard \u2022\u2022\u2022\u2022 4444"),
        ("new-visa", "visa", "4242", "Visa \u2022\u2022\u2022\u2022 4242"),
    ],
)
def test_the_charge_records_the_cards_brand_and_last4(
    localstripe, signed_in_client, user, payment_method, brand, last4, label
):
    payment = bought(signed_in_client, user, card(VISA) if payment_method == "new-visa" else payment_method)
    assert (payment.card_brand, payment.card_last4) == (brand, last4)
    assert payment.card_label == label
    page = signed_in_client.get("/billing/").content.decode()
    assert label in page


def test_a_declined_card_is_recorded_on_the_failed_payment(localstripe, signed_in_client, user):
    response = post_json(signed_in_client, CHARGE, {"pack": "starter", "payment_method": card(DECLINED)})
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    payment = Payment.objects.get(user=user)
    assert (payment.status, payment.card_brand, payment.card_last4) == ("failed", "visa", "0341")


@emails
def test_the_webhook_credits_at_once_and_the_receipt_asks_stripe_for_the_card(localstripe, client, user):
    payment = pending_payment(user)
    intent = intent_for(payment, "pm_card_mastercard")
    Payment.objects.filter(pk=payment.pk).update(stripe_payment_intent_id=intent.id)
    payment.refresh_from_db()
    event = events.intent_succeeded(payment)
    event["data"]["object"]["latest_charge"] = intent.latest_charge_id  # Stripe names it by id only

    response = events.post(client, event)

    assert response.status_code == HTTPStatus.OK, response.content
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    # The credit did not wait for Stripe; the receipt's task asked for the card before naming it.
    assert (payment.card_brand, payment.card_last4) == ("mastercard", "4444")
    [receipt] = receipts_to(user.email)
    assert "4444" in receipt.body


@emails
def test_the_webhook_credits_and_the_receipt_waits_while_stripe_cannot_be_asked(client, user):
    payment = events.make_payment(user)  # its intent is unknown to any Stripe the tests reach
    response = events.post(client, events.intent_succeeded(payment))
    assert response.status_code == HTTPStatus.OK, response.content
    payment.refresh_from_db()
    assert (payment.status, payment.card_last4) == ("succeeded", "")
    # Its receipt stays unsent for billing_periodic's next try, rather than going out without the card.
    assert receipts_to(user.email) == []
    assert PaymentNotice.objects.get(payment=payment).sent_at is None


def test_reconcile_records_the_card(localstripe, user):
    payment = pending_payment(user)
    intent_for(payment, "pm_card_mastercard")  # the id never reached us: found by metadata search
    findings, answered = reconcile.investigate_all([payment])
    assert answered
    reconcile.settle(findings[0])
    payment.refresh_from_db()
    assert (payment.status, payment.card_brand, payment.card_last4) == ("succeeded", "mastercard", "4444")


def test_a_failed_intent_event_records_the_card_it_names(client, user):
    payment = events.make_payment(user)
    event = events.intent_failed(payment)
    event["data"]["object"]["last_payment_error"]["payment_method"] = {
        "id": "pm_x",
        "object": "payment_method",
        "type": "card",
        "card": {"brand": "amex", "last4": "0005"},
    }
    assert events.post(client, event).status_code == HTTPStatus.OK
    payment.refresh_from_db()
    assert (payment.status, payment.card_brand, payment.card_last4) == ("failed", "amex", "0005")
    assert payment.card_label == "American Express \u2022\u2022\u2022\u2022 0005"


# --- the receipt email ----------------------------------------------------------------------


@emails
def test_one_receipt_with_what_was_bought_when_two_paths_credit_it(localstripe, client, signed_in_client, user):
    payment = bought(signed_in_client, user)
    event = events.intent_succeeded(payment)
    event["data"]["object"]["latest_charge"] = stripe_gateway.retrieve_payment_intent(
        payment.stripe_payment_intent_id
    ).latest_charge_id
    assert events.post(client, event).status_code == HTTPStatus.OK  # the webhook, after the charge view
    reconcile.settle(reconcile.investigate_all([payment])[0][0])  # and reconcile

    [receipt] = receipts_to(user.email)
    payment.refresh_from_db()
    assert receipt.subject == f"Your receipt from Emaily Credits ({payment.reference})"
    text = receipt.body
    assert "5 credits" in text
    assert "$5.00 USD" in text
    assert "Visa \u2022\u2022\u2022\u2022 4242" in text
    assert re.search(r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2} UTC", text), text
    assert payment.reference in text
    assert f"{SITE}/billing/" in text
    assert f"{SITE}/billing/receipts/{payment.reference}/" in text
    [(html, mimetype)] = receipt.alternatives
    assert mimetype == "text/html"
    assert "Visa \u2022\u2022\u2022\u2022 4242" in html and f'href="{SITE}/billing/"' in html
    assert PaymentNotice.objects.get(payment=payment).sent_at is not None


@emails
def test_the_3ds_confirm_racing_the_webhook_sends_one_receipt(localstripe, client, signed_in_client, user):
    response = post_json(signed_in_client, CHARGE, {"pack": "starter", "payment_method": card(THREE_D_SECURE)})
    assert response.json()["status"] == "requires_action"
    payment = Payment.objects.get(pk=response.json()["payment"])
    secret = response.json()["client_secret"]
    complete_3ds(localstripe, payment.stripe_payment_intent_id, secret)
    assert events.post(client, events.intent_succeeded(payment)).status_code == HTTPStatus.OK
    assert post_json(signed_in_client, f"/billing/charge/{payment.pk}/confirm/").status_code == HTTPStatus.OK
    assert len(receipts_to(user.email)) == 1


@emails
def test_the_task_run_twice_sends_once(localstripe, signed_in_client, user):
    payment = bought(signed_in_client, user)
    assert len(receipts_to(user.email)) == 1  # the task ran on commit (the tests' immediate backend)
    assert tasks.send_payment_notices_task.call(payment.pk) == 0
    assert notices.send_notice(PaymentNotice.objects.get(payment=payment).pk) == 0
    assert len(receipts_to(user.email)) == 1


@emails
def test_a_failed_send_gives_the_claim_back_and_the_next_run_sends(localstripe, signed_in_client, user, settings):
    settings.EMAIL_BACKEND = "tests.test_receipts.BrokenBackend"
    payment = bought(signed_in_client, user)  # credited; the email could not go
    notice = PaymentNotice.objects.get(payment=payment)
    assert notice.sent_at is None
    assert notices.overdue_payment_ids(now=notice.created_at + notices.RESEND_AFTER * 2) == [payment.pk]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert tasks.send_payment_notices_task.call(payment.pk) == 1
    assert tasks.send_payment_notices_task.call(payment.pk) == 0
    assert len(receipts_to(user.email)) == 1


class BrokenBackend:
    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("the mail server is down")


@emails
def test_with_the_setting_off_no_receipt_nor_refund_notice_is_sent(localstripe, signed_in_client, user, settings):
    settings.BILLING_RECEIPT_EMAILS = False
    payment = bought(signed_in_client, user)
    fulfilment.record_refund(payment, amount_refunded=200)
    assert mail.outbox == []
    assert not PaymentNotice.objects.exists()


# --- the refund notice ----------------------------------------------------------------------


@emails
def test_one_notice_per_refund_partial_or_full(localstripe, client, signed_in_client, user, make_staff):
    staff = make_staff("refunder@example.com", "view_payment", "refund_payment")
    payment = bought(signed_in_client, user)
    charge = stripe_gateway.retrieve_payment_intent(payment.stripe_payment_intent_id).latest_charge_id

    refund_payment(payment, actor=staff, amount=200)
    payment.refresh_from_db()
    # Stripe's webhook for the same refund, twice: no second notice.
    for _ in range(2):
        listed = stripe_gateway.retrieve_charge(charge).refunds
        event = events.charge_refunded(payment, refunds=[(r.id, r.amount, r.status) for r in listed], charge=charge)
        assert events.post(client, event).status_code == HTTPStatus.OK
    assert [m.subject for m in refund_notices_to(user.email)] == [f"Refund of $2.00 USD ({payment.reference})"]

    refund_payment(payment, actor=staff)  # the rest: a second refund, a second notice
    notices_sent = refund_notices_to(user.email)
    assert [m.subject for m in notices_sent] == [
        f"Refund of $2.00 USD ({payment.reference})",
        f"Refund of $3.00 USD ({payment.reference})",
    ]
    last = notices_sent[-1].body
    assert "$5.00 USD of $5.00 USD" in last  # refunded in all
    assert "Visa \u2022\u2022\u2022\u2022 4242" in last and "UTC" in last and f"{SITE}/billing/" in last
    assert len(receipts_to(user.email)) == 1
    assert tasks.send_payment_notices_task.call(payment.pk) == 0


@emails
def test_a_failed_refund_made_again_is_a_new_notice(localstripe, signed_in_client, user):
    payment = bought(signed_in_client, user)
    fulfilment.record_refund(payment, amount_refunded=500)
    fulfilment.record_refund(payment, amount_refunded=500, amount_failed=500)  # the refund failed
    fulfilment.record_refund(payment, amount_refunded=1000, amount_failed=500)  # refunded again
    assert len(refund_notices_to(user.email)) == 2
    assert list(PaymentNotice.objects.filter(kind="refund").values_list("refunded_through", "amount")) == [
        (500, 500),
        (1000, 500),
    ]


# --- the receipt page -----------------------------------------------------------------------


def test_the_receipt_page_shows_the_payment_to_its_owner(localstripe, signed_in_client, user):
    payment = bought(signed_in_client, user, "pm_card_mastercard")
    fulfilment.record_refund(payment, amount_refunded=100)
    url = f"/billing/receipts/{payment.reference}/"
    assert url in signed_in_client.get("/billing/").content.decode()  # linked from the history

    response = signed_in_client.get(url)

    assert response.status_code == HTTPStatus.OK
    page = response.content.decode()
    for expected in (
        "Emaily Credits",
        "Starter",
        "$5.00 USD",
        "Mastercard \u2022\u2022\u2022\u2022 4444",
        "$1.00 USD",
        payment.reference,
        "UTC",
    ):
        assert expected in page, expected
    assert re.search(r'<link rel="stylesheet" href="[^"]*billing/receipt-print\.css" media="print">', page)


def test_the_print_stylesheet_leaves_out_the_layout_and_prints_black_on_white():
    text = Path(finders.find("billing/receipt-print.css")).read_text()
    assert "@media print" in text
    assert re.search(r"\.site-header[^{]*\{\s*display: none", text.replace("\n", " "))
    assert "color: #000" in text and "background: #fff" in text


def test_another_users_receipt_is_a_404_and_signed_out_goes_to_login(localstripe, signed_in_client, user, make_user):
    payment = bought(signed_in_client, user)
    url = f"/billing/receipts/{payment.reference}/"
    other = Client()
    other.force_login(make_user("mallory@example.com"))
    assert other.get(url).status_code == HTTPStatus.NOT_FOUND
    signed_out = Client().get(url)
    assert signed_out.status_code == HTTPStatus.FOUND
    assert "/accounts/login/" in signed_out["Location"]


@pytest.mark.parametrize("reference", ["nope", "1", "-1", "99999-1", "1-2-3", "١-٢"])
def test_a_malformed_or_unknown_reference_is_a_404(signed_in_client, reference):
    assert signed_in_client.get(f"/billing/receipts/{reference}/").status_code == HTTPStatus.NOT_FOUND


def test_a_failed_payment_has_no_receipt(localstripe, signed_in_client, user):
    post_json(signed_in_client, CHARGE, {"pack": "starter", "payment_method": card(DECLINED)})
    payment = Payment.objects.get(user=user)
    assert signed_in_client.get(f"/billing/receipts/{payment.reference}/").status_code == HTTPStatus.NOT_FOUND
    assert "receipt-link" not in signed_in_client.get("/billing/").content.decode()


@emails
def test_an_auto_recharge_is_receipted_once_with_its_card(localstripe, user):
    from billing import autorecharge, cards
    from tests.test_autorecharge import turn_on

    cards.save_card(user, card("5555555555554444"))
    turn_on(user)
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.SUCCEEDED
    payment = Payment.objects.get(user=user, purpose=Payment.Purpose.AUTO_RECHARGE)
    assert (payment.card_brand, payment.card_last4) == ("mastercard", "4444")
    [receipt] = receipts_to(user.email)
    assert "Mastercard \u2022\u2022\u2022\u2022 4444" in receipt.body
    assert tasks.send_payment_notices_task.call(payment.pk) == 0


def test_staff_see_the_card_in_the_admin_list_and_page(localstripe, signed_in_client, user, admin_client):
    payment = bought(signed_in_client, user)
    label = "Visa \u2022\u2022\u2022\u2022 4242"
    assert label in admin_client.get("/admin/billing/payment/").content.decode()
    assert label in admin_client.get(f"/admin/billing/payment/{payment.pk}/change/").content.decode()


def test_times_are_in_the_sites_time_zone_and_name_it(settings):
    from datetime import UTC, datetime

    moment = datetime(2026, 12, 5, 20, 14, tzinfo=UTC)
    assert notices.when(moment) == "5 Dec 2026, 20:14 UTC"
    settings.TIME_ZONE = "America/New_York"
    assert notices.when(moment) == "5 Dec 2026, 15:14 EST"


def _send_in_child(payment_id: int) -> int:
    return tasks.send_payment_notices_task.call(payment_id)


@pytest.mark.postgres
@emails
def test_workers_sending_the_same_receipt_at_once_send_it_once(localstripe, signed_in_client, user, settings, tmp_path):
    from tests.conftest import run_in_processes

    settings.EMAIL_BACKEND = "tests.test_receipts.BrokenBackend"
    payment = bought(signed_in_client, user)  # credited; its receipt is waiting to be sent
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path)

    sent = run_in_processes(_send_in_child, [(payment.pk,)] * 4)

    assert sorted(sent) == [0, 0, 0, 1]
    assert len(list(tmp_path.iterdir())) == 1
    assert PaymentNotice.objects.get(payment=payment).sent_at is not None
