"""The pinned Stripe API version: every request the client makes says it, and a webhook event
rendered in another version is stored for staff, never applied (docs/INSTALL.md, "Stripe API
version")."""

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import stripe
from django.test import Client

from billing import ledger, stripe_gateway
from billing.models import LedgerEntry, Payment, StripeEvent
from tests import stripe_events as events

PINNED = stripe_gateway.STRIPE_API_VERSION


def test_the_pin_is_the_version_the_installed_sdk_was_written_for():
    """An SDK upgrade fails this on purpose: moving the pin changes the shape of what Stripe
    sends, so the fixtures, the handlers and the webhook endpoint's version move with it."""
    assert stripe.api_version == PINNED


def test_every_request_says_the_pinned_version(settings):
    seen = []

    class Stripe(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Stripe-Version"))
            body = json.dumps(
                {"id": "pi_pinned", "object": "payment_intent", "status": "succeeded", "amount": 500, "currency": "usd"}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stripe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.STRIPE_API_BASE = f"http://127.0.0.1:{server.server_address[1]}"
        assert stripe_gateway.retrieve_payment_intent("pi_pinned").status == "succeeded"
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [PINNED]


@pytest.mark.parametrize("version", ["2024-06-20", None])
def test_an_event_of_another_version_is_stored_not_applied_and_shown_to_staff(client, user, make_user, version):
    payment = events.make_payment(user)
    event = events.intent_succeeded(payment)
    if version is None:
        del event["api_version"]
    else:
        event["api_version"] = version

    response = events.post(client, event)

    # 200: a redelivery would carry the same version; the payload is kept for staff instead.
    assert response.status_code == HTTPStatus.OK
    assert response.json() == {"received": True, "status": "held", "duplicate": False}
    stored = StripeEvent.objects.get(event_id=event["id"])
    assert (stored.status, stored.api_version) == ("held", version or "")
    assert stored.error == f"API version {version}, expected {PINNED}"
    assert stored.payload == event
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING
    assert ledger.get_balance(user) == 0
    assert not LedgerEntry.objects.exists()

    again = events.post(client, event)
    assert again.json() == {"received": True, "status": "held", "duplicate": True}
    assert ledger.get_balance(user) == 0

    staff = Client()
    staff.force_login(make_user("root@example.com", is_staff=True, is_superuser=True))
    listing = staff.get("/admin/billing/stripeevent/").content.decode()
    assert "Some Stripe events are held for review" in listing and "Show held events" in listing
    held = staff.get("/admin/billing/stripeevent/", {"status__exact": "held"}).content.decode()
    assert event["id"] in held and "Held for review" in held

    # Staff checked it: the reprocess action applies it, once.
    ran = staff.post(
        "/admin/billing/stripeevent/", {"action": "reprocess", "_selected_action": [str(stored.pk)]}, follow=True
    )
    assert f"Event {event['id']}: processed." in ran.content.decode()
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    assert ledger.get_balance(user) == 5
    assert events.post(client, event).json() == {"received": True, "status": "processed", "duplicate": True}
    assert ledger.get_balance(user) == 5
    assert "Show held events" not in staff.get("/admin/billing/stripeevent/").content.decode()


def test_an_event_of_the_pinned_version_is_recorded_with_it(client, user):
    event = events.intent_succeeded(events.make_payment(user))
    assert event["api_version"] == PINNED
    assert events.post(client, event).json()["status"] == "processed"
    assert StripeEvent.objects.get(event_id=event["id"]).api_version == PINNED


def test_a_held_event_asks_stripe_nothing(client, user, settings):
    """Holding needs no Stripe call: a dispute without its PaymentIntent would otherwise ask for the charge."""
    payment = events.make_payment(user)
    event = events.dispute_created(payment)
    event["data"]["object"]["payment_intent"] = None
    event["api_version"] = "2020-08-27"
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens: a call would fail the event
    assert events.post(client, event).json()["status"] == "held"


def test_localstripe_events_carry_the_pinned_version(localstripe):
    """The launcher stamps events as a real endpoint created with the pinned version gets them."""
    requests.post(
        f"{localstripe}/v1/customers",
        data={"email": "pinned@example.com"},
        headers={"Authorization": "Bearer sk_test_suite"},
        timeout=10,
    ).raise_for_status()
    listed = requests.get(
        f"{localstripe}/v1/events", params={"limit": 5}, headers={"Authorization": "Bearer sk_test_suite"}, timeout=10
    ).json()["data"]
    assert listed and {event["api_version"] for event in listed} == {PINNED}
