"""POST /billing/webhook/: Stripe's events, built as Stripe documents them, signed locally and
delivered through the test client as raw bodies (localstripe never sends charge.refunded or
disputes, and cannot send duplicates, stale or tampered deliveries)."""

import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from django.db import connections
from django.test import Client

from billing import charges, ledger, stripe_gateway
from billing.models import LedgerEntry, Payment, StripeEvent
from scripts.localstripe_server import free_port
from tests import stripe_events as events
from tests.conftest import run_in_processes

Kind = LedgerEntry.Kind


@pytest.fixture
def payment(user):
    return events.make_payment(user)


def _entries(payment):
    return list(LedgerEntry.objects.filter(payment=payment).order_by("id").values_list("kind", "delta"))


def _stored(event) -> StripeEvent:
    return StripeEvent.objects.get(event_id=event["id"])


@pytest.fixture
def paid(localstripe, user):
    """A payment charged at localstripe through a PaymentIntent, and credited (5 credits)."""
    result = charges.start_charge(user, pack_slug="starter", payment_method="pm_card_visa")
    assert result.status == "succeeded"
    return result.payment


def _charge_of(payment) -> str:
    return stripe_gateway.retrieve_payment_intent(payment.stripe_payment_intent_id).latest_charge_id


def _charges_api_charge() -> str:
    """A charge made through the Charges API, as the original Node app made them: no PaymentIntent."""
    charge = stripe_gateway.client().v1.charges.create(
        params={"amount": 500, "currency": "usd", "source": "pm_card_visa"}
    )
    assert charge.payment_intent is None
    return charge.id


def _credited(client, payment):
    response = events.post(client, events.intent_succeeded(payment))
    assert response.status_code == HTTPStatus.OK, response.content
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    return payment


# --- the door: signature, body, method ------------------------------------------------------


def test_wrong_secret_is_refused_and_nothing_stored(client, payment, user):
    response = events.post(client, events.intent_succeeded(payment), secret="whsec_somebody_else")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json() == {"error": "Invalid signature."}
    assert not StripeEvent.objects.exists()
    assert ledger.get_balance(user) == 0


def test_tampered_body_is_refused(client, payment, user):
    event = events.intent_succeeded(payment)
    body = events.body_of(event)
    header = events.sign(body)
    tampered = body.replace(b'"amount": 500', b'"amount": 50000', 1)
    assert tampered != body
    response = events.post(client, tampered, signature=header)
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert not StripeEvent.objects.exists()
    assert ledger.get_balance(user) == 0


@pytest.mark.parametrize(("age", "expected"), [(301, HTTPStatus.BAD_REQUEST), (3600, HTTPStatus.BAD_REQUEST)])
def test_stale_timestamp_is_refused(client, payment, user, age, expected):
    response = events.post(client, events.intent_succeeded(payment), timestamp=int(time.time()) - age)
    assert response.status_code == expected
    assert not StripeEvent.objects.exists()
    assert ledger.get_balance(user) == 0


def test_a_recent_timestamp_within_tolerance_is_accepted(client, payment, user):
    response = events.post(client, events.intent_succeeded(payment), timestamp=int(time.time()) - 240)
    assert response.status_code == HTTPStatus.OK
    assert ledger.get_balance(user) == 5


@pytest.mark.parametrize("header", ["", "garbage", "t=abc,v1=def", "v1=deadbeef"])
def test_missing_or_garbled_signature_header_is_refused(client, payment, header):
    response = events.post(client, events.intent_succeeded(payment), signature=header)
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert not StripeEvent.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'"payment_intent.succeeded"',
        b'{"id": "evt_1", "object": "event"}',
        b'{"id": "evt_1", "type": "payment_intent.succeeded", "data": {}}',
        b'{"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": "pi_1"}}',
        b'{"id": 17, "type": "payment_intent.succeeded", "data": {"object": {}}}',
        b'{"id": "' + b"e" * 300 + b'", "type": "x.y", "data": {"object": {}}}',
        b"\xff\xfe\x00not utf-8",
    ],
)
def test_malformed_body_with_a_valid_signature_is_400_never_500(client, db, body):
    response = events.post(client, body)  # signed with the right secret
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "error" in response.json()
    assert not StripeEvent.objects.exists()


@pytest.mark.parametrize("depth", [100, 1_000, 100_000])
def test_a_deeply_nested_signed_body_is_400_never_500(client, db, depth):
    nested = b"[" * depth + b"]" * depth
    body = b'{"id": "evt_deep", "type": "payment_intent.succeeded", "data": {"object": {"x": ' + nested + b"}}}"
    response = events.post(client, body)  # signed with the right secret
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json() == {"error": "Invalid payload."}
    assert not StripeEvent.objects.exists()


def test_a_body_over_the_upload_limit_is_answered_in_json(client, payment, user, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4_000
    event = events.intent_succeeded(payment)
    event["data"]["object"]["description"] = "x" * 5_000
    response = events.post(client, event)
    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert response.json() == {"error": "Payload too large."}
    assert not StripeEvent.objects.exists()
    assert ledger.get_balance(user) == 0


def test_only_post(client, db):
    assert client.get(events.WEBHOOK_URL).status_code == HTTPStatus.METHOD_NOT_ALLOWED


def test_no_csrf_token_needed(payment, user):
    strict = Client(enforce_csrf_checks=True)
    response = events.post(strict, events.intent_succeeded(payment))
    assert response.status_code == HTTPStatus.OK
    assert ledger.get_balance(user) == 5


# --- payment_intent.succeeded / payment_failed ----------------------------------------------


def test_succeeded_credits_the_payment(client, payment, user):
    event = events.intent_succeeded(payment)
    response = events.post(client, event)
    assert response.status_code == HTTPStatus.OK
    assert response.json() == {"received": True, "status": "processed", "duplicate": False}
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    assert ledger.get_balance(user) == 5
    assert _entries(payment) == [(Kind.PURCHASE, 5)]
    stored = _stored(event)
    assert (stored.type, stored.status, stored.attempts) == ("payment_intent.succeeded", "processed", 1)
    assert stored.error == ""
    assert stored.processed_at is not None
    assert stored.payload == event


def test_same_event_five_times_is_processed_once(client, payment, user):
    event = events.intent_succeeded(payment)
    answers = [events.post(client, event) for _ in range(5)]
    assert [a.status_code for a in answers] == [HTTPStatus.OK] * 5
    assert [a.json()["duplicate"] for a in answers] == [False, True, True, True, True]
    assert ledger.get_balance(user) == 5
    assert _entries(payment) == [(Kind.PURCHASE, 5)]
    assert StripeEvent.objects.count() == 1
    assert _stored(event).attempts == 1


def test_a_second_success_event_for_the_same_payment_credits_nothing(client, payment, user):
    events.post(client, events.intent_succeeded(payment))
    response = events.post(client, events.intent_succeeded(payment))  # another event id, same intent
    assert response.status_code == HTTPStatus.OK
    assert ledger.get_balance(user) == 5
    assert _entries(payment) == [(Kind.PURCHASE, 5)]


def test_succeeded_found_by_intent_id_when_metadata_is_missing(client, payment, user):
    response = events.post(client, events.intent_succeeded(payment, with_metadata=False))
    assert response.json()["status"] == "processed"
    assert ledger.get_balance(user) == 5


def test_succeeded_with_a_different_amount_is_never_credited(client, payment, user):
    event = events.intent_succeeded(payment, amount=50)
    response = events.post(client, event)
    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert "error" in response.json()
    assert "Mismatch" not in response.content.decode()  # details stay in the admin
    stored = _stored(event)
    assert stored.status == StripeEvent.Status.FAILED
    assert "Stripe reports 50 usd" in stored.error
    assert ledger.get_balance(user) == 0
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", 500.0), ("amount", "500"), ("amount", True), ("currency", ["usd"]), ("currency", 840), ("id", None)],
)
def test_succeeded_with_facts_of_the_wrong_type_is_a_mismatch_never_a_crash(client, payment, user, field, value):
    event = events.intent_succeeded(payment)
    intent = event["data"]["object"]
    intent[field] = value
    if field == "amount":
        intent["amount_received"] = value
    assert events.post(client, event).status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert _stored(event).error.startswith("PaymentMismatch:")
    assert ledger.get_balance(user) == 0


def test_payment_failed_marks_failed_with_stripes_message(client, payment, user):
    event = events.intent_failed(payment, message="Your card has insufficient funds.")
    response = events.post(client, event)
    assert response.json()["status"] == "processed"
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED
    assert payment.failure_message == "Your card has insufficient funds."
    assert ledger.get_balance(user) == 0
    assert _entries(payment) == []


def test_payment_failed_without_a_usable_error_message_still_fails_the_payment(client, payment):
    event = events.intent_failed(payment)
    event["data"]["object"]["last_payment_error"] = ["not", "an", "object"]
    assert events.post(client, event).json()["status"] == "processed"
    payment.refresh_from_db()
    assert (payment.status, payment.failure_message) == (Payment.Status.FAILED, "The payment failed.")


def test_failure_arriving_after_success_leaves_it_credited(client, payment, user):
    _credited(client, payment)
    response = events.post(client, events.intent_failed(payment))
    assert response.status_code == HTTPStatus.OK
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    assert payment.failure_message == ""
    assert ledger.get_balance(user) == 5


def test_success_after_a_failed_attempt_credits(client, payment, user):
    # Stripe lets the customer retry the same intent with another card after a decline.
    events.post(client, events.intent_failed(payment))
    _credited(client, payment)
    assert ledger.get_balance(user) == 5
    assert _entries(payment) == [(Kind.PURCHASE, 5)]


# --- charge.refunded ------------------------------------------------------------------------


def test_full_refund_claws_back_every_credit(client, payment, user):
    _credited(client, payment)
    response = events.post(client, events.charge_refunded(payment, refunds=[500]))
    assert response.json()["status"] == "processed"
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REFUNDED
    assert (payment.amount_refunded, payment.credits_clawed_back, payment.credits_unrecovered) == (500, 5, 0)
    assert ledger.get_balance(user) == 0
    assert _entries(payment) == [(Kind.PURCHASE, 5), (Kind.REFUND, -5)]


def test_partial_refund_claws_back_proportionally(client, payment, user):
    _credited(client, payment)
    events.post(client, events.charge_refunded(payment, refunds=[200]))  # 2/5 of the price
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    assert (payment.amount_refunded, payment.credits_clawed_back) == (200, 2)
    assert ledger.get_balance(user) == 3


def test_partial_refund_rounds_in_the_customers_favour(client, payment, user):
    _credited(client, payment)
    events.post(client, events.charge_refunded(payment, refunds=[150]))  # 1.5 credits' worth
    payment.refresh_from_db()
    assert payment.credits_clawed_back == 1
    assert ledger.get_balance(user) == 4


def test_second_partial_refund_takes_the_rest(client, payment, user):
    _credited(client, payment)
    events.post(client, events.charge_refunded(payment, refunds=[200]))
    events.post(client, events.charge_refunded(payment, refunds=[200, 300]))
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REFUNDED
    assert (payment.amount_refunded, payment.credits_clawed_back) == (500, 5)
    assert ledger.get_balance(user) == 0
    assert _entries(payment) == [(Kind.PURCHASE, 5), (Kind.REFUND, -2), (Kind.REFUND, -3)]


def test_repeated_and_stale_refund_events_change_nothing(client, payment, user):
    _credited(client, payment)
    first = events.charge_refunded(payment, refunds=[200])
    second = events.charge_refunded(payment, refunds=[200, 300])
    events.post(client, first)
    events.post(client, second)
    assert events.post(client, first).json()["duplicate"] is True  # the same delivery again
    # The same facts under a new event id (Stripe resends state, not deltas), and an old state.
    assert events.post(client, events.charge_refunded(payment, refunds=[200, 300])).status_code == HTTPStatus.OK
    assert events.post(client, events.charge_refunded(payment, refunds=[200])).status_code == HTTPStatus.OK
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.credits_clawed_back, payment.status) == (500, 5, "refunded")
    assert ledger.get_balance(user) == 0
    assert _entries(payment) == [(Kind.PURCHASE, 5), (Kind.REFUND, -2), (Kind.REFUND, -3)]


def test_refund_after_the_credits_were_spent_never_goes_below_zero(client, payment, user):
    _credited(client, payment)
    ledger.spend_credits(user, 4, reason="used the product")
    events.post(client, events.charge_refunded(payment, refunds=[500]))
    payment.refresh_from_db()
    assert ledger.get_balance(user) == 0
    assert (payment.credits_clawed_back, payment.credits_unrecovered, payment.status) == (1, 4, "refunded")
    assert _entries(payment) == [(Kind.PURCHASE, 5), (Kind.REFUND, -1)]
    assert not LedgerEntry.objects.filter(balance_after__lt=0).exists()


def test_refund_after_everything_was_spent_records_the_whole_shortfall(client, payment, user):
    _credited(client, payment)
    ledger.spend_credits(user, 5, reason="used the product")
    events.post(client, events.charge_refunded(payment, refunds=[500]))
    payment.refresh_from_db()
    assert ledger.get_balance(user) == 0
    assert (payment.credits_clawed_back, payment.credits_unrecovered) == (0, 5)
    assert _entries(payment) == [(Kind.PURCHASE, 5)]


def test_refund_larger_than_the_payment_fails_and_changes_nothing(client, payment, user):
    _credited(client, payment)
    event = events.charge_refunded(payment, refunds=[500, 500])
    response = events.post(client, event)
    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert _stored(event).status == StripeEvent.Status.FAILED
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.credits_clawed_back) == (0, 0)
    assert ledger.get_balance(user) == 5


def test_refund_in_another_currency_fails(client, payment, user):
    _credited(client, payment)
    event = events.charge_refunded(payment, refunds=[500])
    event["data"]["object"]["currency"] = "eur"
    assert events.post(client, event).status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert ledger.get_balance(user) == 5


# --- charge.dispute.created -----------------------------------------------------------------


def test_dispute_claws_back_and_flags(client, payment, user):
    _credited(client, payment)
    event = events.dispute_created(payment)
    assert events.post(client, event).json()["status"] == "processed"
    payment.refresh_from_db()
    assert payment.status == Payment.Status.DISPUTED
    assert (payment.amount_disputed, payment.credits_clawed_back) == (500, 5)
    assert ledger.get_balance(user) == 0
    assert _entries(payment) == [(Kind.PURCHASE, 5), (Kind.DISPUTE, -5)]
    assert events.post(client, event).json()["duplicate"] is True
    assert ledger.get_balance(user) == 0


def test_dispute_found_through_an_expanded_charge(client, payment, user):
    _credited(client, payment)
    event = events.dispute_created(payment)
    dispute = event["data"]["object"]
    dispute["charge"] = {"id": dispute["charge"], "object": "charge", "payment_intent": dispute.pop("payment_intent")}
    assert events.post(client, event).json()["status"] == "processed"
    assert ledger.get_balance(user) == 0


def test_dispute_on_a_charges_api_charge_is_ignored_never_retried(client, paid, user):
    """Disputes on charges made without a PaymentIntent (the original Node app's, or another
    system's on the same Stripe account) name no payment_intent; Stripe says the charge has none."""
    event = events.dispute(paid, charge=_charges_api_charge())
    del event["data"]["object"]["payment_intent"]
    response = events.post(client, event)
    assert response.status_code == HTTPStatus.OK
    assert response.json()["status"] == "ignored"
    assert "made without a PaymentIntent" in _stored(event).error
    paid.refresh_from_db()
    assert (paid.status, paid.amount_disputed) == (Payment.Status.SUCCEEDED, 0)
    assert ledger.get_balance(user) == 5


def test_dispute_naming_only_our_charge_is_matched_by_asking_stripe(client, paid, user):
    event = events.dispute(paid, charge=_charge_of(paid))
    del event["data"]["object"]["payment_intent"]
    assert events.post(client, event).json()["status"] == "processed"
    paid.refresh_from_db()
    assert (paid.status, paid.credits_clawed_back) == (Payment.Status.DISPUTED, 5)
    assert ledger.get_balance(user) == 0


def test_dispute_on_a_charge_stripe_does_not_know_is_ignored(client, paid, user):
    event = events.dispute(paid, charge="ch_NotOnThisAccount1")
    del event["data"]["object"]["payment_intent"]
    assert events.post(client, event).json()["status"] == "ignored"
    assert "Stripe does not know charge ch_NotOnThisAccount1" in _stored(event).error
    assert ledger.get_balance(user) == 5


def test_when_stripe_cannot_be_asked_the_event_fails_and_its_redelivery_settles_it(
    client, paid, user, settings, localstripe
):
    event = events.dispute(paid, charge=_charge_of(paid))
    del event["data"]["object"]["payment_intent"]
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    response = events.post(client, event)
    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert "error" in response.json()
    stored = _stored(event)
    assert (stored.status, stored.error.split(":")[0]) == ("failed", "StripeUnavailable")
    assert ledger.get_balance(user) == 5

    settings.STRIPE_API_BASE = localstripe  # Stripe is back; it redelivers
    assert events.post(client, event).json()["status"] == "processed"
    stored.refresh_from_db()
    assert (stored.status, stored.attempts) == ("processed", 2)
    assert ledger.get_balance(user) == 0


class _WatchingProxy(BaseHTTPRequestHandler):
    """Forwards Stripe API reads to localstripe, noting whether the webhook's database
    connection was inside a transaction at the moment it asked."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        server = self.server
        server.seen.append(server.watched.in_atomic_block)
        answer = requests.get(server.upstream + self.path, headers={"Authorization": "Bearer sk_test"}, timeout=5)
        self.send_response(answer.status_code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args):
        pass


@pytest.mark.django_db(transaction=True)  # no test transaction around the request: the view's own are seen
def test_stripe_is_asked_outside_any_database_transaction(client, localstripe, settings, user):
    result = charges.start_charge(user, pack_slug="starter", payment_method="pm_card_visa")
    event = events.dispute(result.payment, charge=_charge_of(result.payment))
    del event["data"]["object"]["payment_intent"]
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _WatchingProxy)
    # This thread's own connection object (the view runs in this thread; `connection` would
    # resolve to the proxy thread's).
    proxy.upstream, proxy.watched, proxy.seen = localstripe, connections["default"], []
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{proxy.server_address[1]}"
    try:
        assert events.post(client, event).json()["status"] == "processed"
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert proxy.seen and not any(proxy.seen), proxy.seen
    assert ledger.get_balance(user) == 0


def test_refund_of_a_charge_made_without_a_payment_intent_is_ignored_whatever_its_metadata(client, payment, user):
    _credited(client, payment)
    event = events.charge_refunded(payment, refunds=[500])
    charge = event["data"]["object"]
    charge["payment_intent"] = None
    charge["metadata"] = {"payment_id": str(payment.pk), "user_id": str(user.pk)}  # another system's
    assert events.post(client, event).json()["status"] == "ignored"
    assert "not made through a PaymentIntent" in _stored(event).error
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.status) == (0, Payment.Status.SUCCEEDED)
    assert ledger.get_balance(user) == 5


def test_refund_event_without_the_refund_list_asks_stripe(client, paid, user):
    """API versions since 2022-11-15 no longer list a charge's refunds in charge.refunded."""
    stripe_gateway.create_refund(intent_id=paid.stripe_payment_intent_id, amount=200, idempotency_key="dashboard")
    event = events.charge_refunded(paid, refunds=[200], charge=_charge_of(paid))
    del event["data"]["object"]["refunds"]
    assert events.post(client, event).json()["status"] == "processed"
    paid.refresh_from_db()
    assert (paid.amount_refunded, paid.credits_clawed_back) == (200, 2)
    assert ledger.get_balance(user) == 3


def test_dispute_after_credits_were_spent_records_the_shortfall(client, payment, user):
    _credited(client, payment)
    ledger.spend_credits(user, 3, reason="used the product")
    events.post(client, events.dispute_created(payment))
    payment.refresh_from_db()
    assert (payment.credits_clawed_back, payment.credits_unrecovered, payment.status) == (2, 3, "disputed")
    assert ledger.get_balance(user) == 0


# --- out of order ---------------------------------------------------------------------------


def test_refund_before_success_ends_at_zero_with_both_entries(client, payment, user):
    refund = events.post(client, events.charge_refunded(payment, refunds=[500]))
    assert refund.status_code == HTTPStatus.OK
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING  # nothing to claw back yet
    assert ledger.get_balance(user) == 0

    events.post(client, events.intent_succeeded(payment))
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REFUNDED
    assert ledger.get_balance(user) == 0
    assert _entries(payment) == [(Kind.PURCHASE, 5), (Kind.REFUND, -5)]


def test_dispute_before_success_ends_at_zero(client, payment, user):
    events.post(client, events.dispute_created(payment))
    events.post(client, events.intent_succeeded(payment))
    payment.refresh_from_db()
    assert payment.status == Payment.Status.DISPUTED
    assert ledger.get_balance(user) == 0
    assert _entries(payment) == [(Kind.PURCHASE, 5), (Kind.DISPUTE, -5)]


def test_partial_refunds_out_of_order(client, payment, user):
    _credited(client, payment)
    events.post(client, events.charge_refunded(payment, refunds=[200, 300]))
    events.post(client, events.charge_refunded(payment, refunds=[200]))  # the older one, late
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.credits_clawed_back) == (500, 5)
    assert ledger.get_balance(user) == 0


# --- events that are not ours, or not for us ------------------------------------------------


def test_unknown_event_type_is_stored_as_ignored(client, db):
    event = events.load("payment_intent.succeeded")
    event["type"] = "customer.created"
    event["data"]["object"] = {"id": "cus_PzQ1", "object": "customer", "email": "x@example.com"}
    response = events.post(client, event)
    assert response.status_code == HTTPStatus.OK
    assert response.json()["status"] == "ignored"
    stored = _stored(event)
    assert (stored.status, stored.type) == ("ignored", "customer.created")
    assert "no handler" in stored.error


def test_intent_not_created_by_this_site_is_ignored(client, payment, user):
    stranger = events.intent_succeeded(payment, with_metadata=False)
    stranger["data"]["object"]["id"] = "pi_3PzQzzFq2Ydq7PHJ1nOtOurs"
    response = events.post(client, stranger)
    assert response.status_code == HTTPStatus.OK
    assert response.json()["status"] == "ignored"
    assert "not created by this site" in _stored(stranger).error
    assert ledger.get_balance(user) == 0


def test_refund_of_a_charge_that_is_not_ours_is_ignored(client, payment, user):
    _credited(client, payment)
    event = events.charge_refunded(payment, refunds=[500])
    event["data"]["object"]["payment_intent"] = "pi_3PzQzzFq2Ydq7PHJ1nOtOurs"
    assert events.post(client, event).json()["status"] == "ignored"
    assert ledger.get_balance(user) == 5


def test_success_naming_another_user_never_credits(client, payment, user, other_user):
    event = events.intent_succeeded(payment)
    event["data"]["object"]["metadata"]["user_id"] = str(other_user.pk)
    response = events.post(client, event)
    # Our own intent naming another user contradicts our records: failed, for staff to see.
    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert _stored(event).error.startswith("PaymentMismatch:")
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING
    assert (ledger.get_balance(user), ledger.get_balance(other_user)) == (0, 0)


def test_an_intent_we_never_stored_naming_another_user_is_ignored(client, payment, user, other_user):
    """Intents older than payment_ref name only payment_id and user_id: another installation's
    payment with the same id has another user, and is not ours."""
    event = events.intent_succeeded(payment)
    event["data"]["object"]["metadata"]["user_id"] = str(other_user.pk)
    Payment.objects.filter(pk=payment.pk).update(stripe_payment_intent_id=None)
    response = events.post(client, event)
    assert response.status_code == HTTPStatus.OK
    assert response.json()["status"] == "ignored"
    payment.refresh_from_db()
    assert (payment.status, payment.stripe_payment_intent_id) == (Payment.Status.PENDING, None)
    assert not LedgerEntry.objects.exists()


@pytest.mark.parametrize("kind", ["payment_failed", "refunded", "disputed"])
def test_other_events_naming_another_user_change_nothing(client, payment, user, other_user, kind):
    if kind == "payment_failed":
        event = events.intent_failed(payment)
    else:
        _credited(client, payment)
        event = events.charge_refunded(payment, refunds=[500]) if kind == "refunded" else events.dispute(payment)
    event["data"]["object"]["metadata"] = {"payment_id": str(payment.pk), "user_id": str(other_user.pk)}
    assert events.post(client, event).status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert _stored(event).error.startswith("PaymentMismatch:")
    payment.refresh_from_db()
    expected = Payment.Status.PENDING if kind == "payment_failed" else Payment.Status.SUCCEEDED
    assert (payment.status, payment.credits_clawed_back) == (expected, 0)
    assert ledger.get_balance(user) == (0 if kind == "payment_failed" else 5)


def test_metadata_and_intent_naming_different_payments_fails(client, payment, make_user):
    other = events.make_payment(make_user())
    event = events.intent_succeeded(payment)
    event["data"]["object"]["id"] = other.stripe_payment_intent_id
    assert events.post(client, event).status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert not LedgerEntry.objects.exists()


def test_event_for_a_payment_this_database_lacks_fails_until_the_payment_exists(client, user):
    """Stripe redelivers a failed event; once the payment is there, the redelivery settles it."""
    ghost = Payment(
        pk=987654, user=user, pack_id=1, credits=5, amount=500, currency="usd", stripe_payment_intent_id="pi_ghost1"
    )
    ghost.pack = events.make_payment(user).pack
    event = events.intent_succeeded(ghost)
    response = events.post(client, event)
    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    stored = _stored(event)
    assert (stored.status, stored.attempts) == ("failed", 1)
    assert "not in this database" in stored.error

    ghost.save(force_insert=True)
    response = events.post(client, event)
    assert response.status_code == HTTPStatus.OK
    stored.refresh_from_db()
    assert (stored.status, stored.attempts, stored.error) == ("processed", 2, "")
    assert ledger.get_balance(user) == 5


# --- reprocessing failed events from the admin ----------------------------------------------


@pytest.fixture
def failed_event(client, user):
    """A success event for a payment that did not exist when it arrived (then restored)."""
    pack = events.make_payment(user).pack
    payment = Payment(pk=424242, user=user, pack=pack, credits=5, amount=500, currency="usd")
    payment.stripe_payment_intent_id = "pi_restored1"
    event = events.intent_succeeded(payment)
    assert events.post(client, event).status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    payment.save(force_insert=True)
    return _stored(event)


def _run_action(client, model, action, pks):
    return client.post(
        f"/admin/billing/{model}/", {"action": action, "_selected_action": [str(pk) for pk in pks]}, follow=True
    )


def test_admin_reprocess_runs_a_failed_event_once(client, make_user, failed_event, user):
    admin_client = Client()
    admin_client.force_login(make_user("root@example.com", is_staff=True, is_superuser=True))
    response = _run_action(admin_client, "stripeevent", "reprocess", [failed_event.pk])
    assert response.status_code == HTTPStatus.OK
    assert f"Event {failed_event.event_id}: processed." in response.content.decode()
    failed_event.refresh_from_db()
    assert (failed_event.status, failed_event.attempts) == ("processed", 2)
    assert ledger.get_balance(user) == 5

    again = _run_action(admin_client, "stripeevent", "reprocess", [failed_event.pk])
    assert "skipped, it is processed" in again.content.decode()
    failed_event.refresh_from_db()
    assert failed_event.attempts == 2
    assert ledger.get_balance(user) == 5
    assert LedgerEntry.objects.filter(profile__user=user).count() == 1


def test_admin_reprocess_of_a_still_failing_event_reports_it(client, make_user, user):
    event = events.intent_succeeded(events.make_payment(user), amount=1)
    events.post(client, event)
    admin_client = Client()
    admin_client.force_login(make_user("root@example.com", is_staff=True, is_superuser=True))
    response = _run_action(admin_client, "stripeevent", "reprocess", [_stored(event).pk])
    assert "failed again" in response.content.decode()
    stored = _stored(event)
    assert (stored.status, stored.attempts) == ("failed", 2)
    assert ledger.get_balance(user) == 0


def test_staff_without_the_permission_cannot_reprocess(client, make_staff, failed_event, user):
    staff = make_staff("viewer@example.com", "view_stripeevent")
    viewer = Client()
    viewer.force_login(staff)
    page = viewer.get("/admin/billing/stripeevent/")
    assert page.status_code == HTTPStatus.OK
    assert b'value="reprocess"' not in page.content
    _run_action(viewer, "stripeevent", "reprocess", [failed_event.pk])
    failed_event.refresh_from_db()
    assert failed_event.status == StripeEvent.Status.FAILED
    assert ledger.get_balance(user) == 0


def test_reprocess_is_offered_to_staff_with_the_permission(make_staff):
    staff = make_staff("operator@example.com", "view_stripeevent", "change_stripeevent")
    operator = Client()
    operator.force_login(staff)
    assert b'value="reprocess"' in operator.get("/admin/billing/stripeevent/").content


# --- the same event from several processes at once (PostgreSQL) -----------------------------


def _deliver(body: bytes, header: str) -> tuple[int, bool | None]:
    response = Client().post(
        events.WEBHOOK_URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )
    return response.status_code, response.json().get("duplicate")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["succeeded", "refunded"])
def test_the_same_event_from_many_processes_is_processed_once(make_user, kind):
    user = make_user()
    payment = events.make_payment(user)
    if kind == "refunded":
        assert _deliver(*_signed(events.intent_succeeded(payment))) == (HTTPStatus.OK, False)
        event = events.charge_refunded(payment, refunds=[500])
    else:
        event = events.intent_succeeded(payment)
    body, header = _signed(event)

    answers = run_in_processes(_deliver, [(body, header)] * 6)

    assert sorted(answers) == [(HTTPStatus.OK, False)] + [(HTTPStatus.OK, True)] * 5
    stored = StripeEvent.objects.get(event_id=event["id"])
    assert (stored.status, stored.attempts) == ("processed", 1)
    expected = [(Kind.PURCHASE, 5)] + ([(Kind.REFUND, -5)] if kind == "refunded" else [])
    assert _entries(payment) == expected
    assert ledger.get_balance(user) == (5 if kind == "succeeded" else 0)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_redeliveries_of_a_failed_event_from_many_processes_run_it_once(make_user):
    user = make_user()
    pack = events.make_payment(user).pack
    payment = Payment(pk=7777, user=user, pack=pack, credits=5, amount=500, currency="usd")
    payment.stripe_payment_intent_id = "pi_restored7777"
    event = events.intent_succeeded(payment)
    body, header = _signed(event)
    assert _deliver(body, header)[0] == HTTPStatus.INTERNAL_SERVER_ERROR  # no such payment yet
    payment.save(force_insert=True)

    answers = run_in_processes(_deliver, [(body, header)] * 6)

    # The failed row is locked by the first retry; the others wait and find it processed.
    assert sorted(answers) == [(HTTPStatus.OK, False)] + [(HTTPStatus.OK, True)] * 5
    stored = StripeEvent.objects.get(event_id=event["id"])
    assert (stored.status, stored.attempts) == ("processed", 2)
    assert _entries(payment) == [(Kind.PURCHASE, 5)]


def _signed(event):
    body = events.body_of(event)
    return body, events.sign(body)


@pytest.mark.parametrize("matches", [True, False])
def test_the_payment_reference_tells_this_installation_from_another(client, user, matches):
    """Stripe sends every endpoint of an account every event: a second environment (or a reset
    database) has its own payment with the same id. Its events must never credit ours, even
    before ours has learnt its own PaymentIntent id."""
    payment = events.make_payment(user)
    event = events.intent_succeeded(payment)
    Payment.objects.filter(pk=payment.pk).update(stripe_payment_intent_id=None)
    payment.refresh_from_db()
    event["data"]["object"]["metadata"]["payment_ref"] = payment.reference if matches else f"{payment.pk}-1"

    response = events.post(client, event)

    assert response.status_code == HTTPStatus.OK
    payment.refresh_from_db()
    if matches:
        assert payment.status == Payment.Status.SUCCEEDED
        assert ledger.get_balance(user) == 5
    else:
        assert response.json()["status"] == "ignored"
        assert (payment.status, payment.stripe_payment_intent_id) == (Payment.Status.PENDING, None)
        assert not LedgerEntry.objects.exists()
