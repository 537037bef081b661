"""Faults found by the reliability suite (reliability/faults.py), pinned as tests.

The database connection dying while a charge waits on Stripe (after Stripe accepted it) used to
surface as Django's HTML 500 page on a JSON endpoint; it is now a 503 JSON answer with a sentence
the page shows, the payment stays pending (nothing half-written), and Stripe's webhook credits it
once. Uses a real PostgreSQL backend killed with pg_terminate_backend, a real localstripe, and
the fault-injecting proxy that holds Stripe's answer until the connection is dead."""

import json
import threading
import time
from http import HTTPStatus

import psycopg
import pytest
import requests
from django.db import connection

from billing import ledger
from billing.http import DATABASE_UNAVAILABLE
from billing.models import LedgerEntry, Payment
from testbed.faultproxy import FaultyStripe
from tests.stripe_helpers import post_json, signed_headers

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def faulty_stripe(localstripe, settings):
    proxy = FaultyStripe(localstripe)
    settings.STRIPE_API_BASE = proxy.base
    yield proxy
    proxy.stop()


def terminate(pid: int) -> None:
    params = connection.settings_dict
    with psycopg.connect(
        dbname="postgres",
        user=params["USER"] or None,
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        password=params["PASSWORD"] or None,
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def succeeded_event(base: str, payment_id: int) -> dict:
    events = requests.get(
        f"{base}/v1/events", params={"limit": 100}, headers={"Authorization": "Bearer sk_test_suite"}, timeout=10
    ).json()["data"]
    return next(
        e
        for e in events
        if e["type"] == "payment_intent.succeeded"
        and e["data"]["object"]["metadata"].get("payment_id") == str(payment_id)
    )


def test_database_lost_after_stripe_accepted_is_a_503_json_and_the_webhook_settles_it(
    faulty_stripe, localstripe, client, user, settings
):
    client.force_login(user)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]

    def kill_when_stripe_has_accepted():
        if faulty_stripe.forwarded_create.wait(timeout=15):
            terminate(pid)
        faulty_stripe.release()

    faulty_stripe.set_mode("hold", hold_seconds=20)
    killer = threading.Thread(target=kill_when_stripe_has_accepted)
    killer.start()
    response = post_json(client, "/billing/charge/", {"pack": "starter", "payment_method": "pm_card_visa"})
    killer.join(timeout=30)

    assert faulty_stripe.held == 1  # Stripe really accepted the charge before the connection died
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE, response.content[:300]
    assert response.json() == {"error": DATABASE_UNAVAILABLE}

    connection.close()  # the test's own connection was the one killed; the next query reconnects
    payment = Payment.objects.get(user=user)
    assert payment.status == Payment.Status.PENDING  # not lost, not credited, nothing half-written
    assert ledger.get_balance(user) == 0
    assert not LedgerEntry.objects.filter(payment=payment).exists()

    # Stripe's webhook arrives (twice): credited exactly once.
    body = json.dumps(succeeded_event(localstripe, payment.pk)).encode()
    for _ in range(2):
        delivered = client.post(
            "/billing/webhook/",
            body,
            content_type="application/json",
            **signed_headers(body, settings.STRIPE_WEBHOOK_SECRET, timestamp=int(time.time())),
        )
        assert delivered.status_code == HTTPStatus.OK, delivered.content
    assert ledger.get_balance(user) == 5
    assert LedgerEntry.objects.filter(payment=payment, kind="purchase").count() == 1
