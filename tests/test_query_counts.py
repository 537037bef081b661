"""/billing/ and /api/current_user make a small, fixed number of queries, whatever the ledger's
size, and a redelivered webhook costs one (docs/BENCHMARKS.md measures the latency).

Contract tests of the implementation: they count queries and match their SQL text, so they are
meant to move when the implementation changes (say, the balance read by another query).
"""

import json
from http import HTTPStatus

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing import ledger, stripe_gateway
from billing.models import CreditPack, LedgerEntry, Payment, StripeEvent
from tests.stripe_helpers import stripe_signature

MAX_QUERIES = 6
# /billing/ also sums the open credit grants by category and expiry day (one GROUP BY query) to
# say what expires when, lists the credits on hold (one query on the active holds' index), and
# reads the saved card (one query on its unique profile column).
MAX_QUERIES_BILLING_PAGE = MAX_QUERIES + 3


def give_history(user, *, entries: int, payments: int) -> None:
    pack = CreditPack.objects.get(slug="starter")
    ledger.add_credits(user, entries, kind=LedgerEntry.Kind.BONUS, reason="seed")
    for n in range(entries - 1):
        ledger.spend_credits(user, 1, reason=f"spend {n}")
    for _ in range(payments):
        Payment.objects.create(user=user, pack=pack, credits=pack.credits, amount=pack.amount, currency=pack.currency)


def count_queries(client, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    assert response.status_code == HTTPStatus.OK
    return len(queries)


@pytest.mark.parametrize("path", ["/billing/", "/billing/?page=2", "/api/current_user"])
def test_signed_in_pages_stay_within_the_query_budget(signed_in_client, user, path, django_assert_max_num_queries):
    give_history(user, entries=60, payments=3)  # more than two ledger pages, a payments table
    budget = MAX_QUERIES_BILLING_PAGE if path.startswith("/billing/") else MAX_QUERIES
    with django_assert_max_num_queries(budget):
        response = signed_in_client.get(path)
    assert response.status_code == HTTPStatus.OK


@pytest.mark.parametrize("path", ["/billing/", "/api/current_user"])
def test_query_count_does_not_grow_with_the_ledger(client, make_user, path):
    few, many = make_user(), make_user()
    give_history(few, entries=2, payments=1)
    give_history(many, entries=80, payments=25)
    client.force_login(few)
    with_few = count_queries(client, path)
    client.force_login(many)
    assert count_queries(client, path) == with_few


def test_billing_page_reads_the_balance_once_for_page_and_header(signed_in_client, user):
    ledger.add_credits(user, 7, kind=LedgerEntry.Kind.BONUS, reason="seed")
    with CaptureQueriesContext(connection) as queries:
        response = signed_in_client.get("/billing/")
    balance_reads = [q for q in queries if 'FROM "billing_profile"' in q["sql"] and '"credits"' in q["sql"]]
    assert len(balance_reads) == 1
    assert b'id="header-credits-value">7<' in response.content
    assert b'id="balance-value">7<' in response.content


def test_ledger_pages_go_back_in_time_without_counting(signed_in_client, user):
    give_history(user, entries=30, payments=0)  # 30 entries: a full page of 25 and 5 older
    first = signed_in_client.get("/billing/")
    assert b"Older &rarr;" in first.content and b"&larr; Newer" not in first.content
    second = signed_in_client.get("/billing/?page=2")
    assert b"&larr; Newer" in second.content and b"Older &rarr;" not in second.content
    assert second.content.count(b'class="kind kind-') == 5
    for past_the_end in ("3", "9", "369367187477555804", str(2**63), "9" * 40):
        page = signed_in_client.get(f"/billing/?page={past_the_end}")
        assert page.status_code == HTTPStatus.OK
        assert page.content.count(b'class="kind kind-') == 5  # the last (oldest) page
        assert b"&larr; Newer" in page.content and b"Older &rarr;" not in page.content
    for junk in ("0", "-1", "abc", "1e9", "\u0661", " 2 "):
        page = signed_in_client.get("/billing/", {"page": junk.encode().decode("unicode_escape")})
        assert page.status_code == HTTPStatus.OK


def signed_event(event_id: str) -> tuple[bytes, str]:
    body = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": stripe_gateway.STRIPE_API_VERSION,
            "type": "customer.created",
            "data": {"object": {"id": "cus_1"}},
        }
    ).encode()
    return body, stripe_signature(body)


def test_a_redelivered_finished_webhook_is_answered_from_one_query(client, db):
    body, signature = signed_event("evt_query_count")
    first = client.post("/billing/webhook/", body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature)
    assert first.json() == {"received": True, "status": "ignored", "duplicate": False}
    with CaptureQueriesContext(connection) as queries:
        again = client.post("/billing/webhook/", body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature)
    assert again.json() == {"received": True, "status": "ignored", "duplicate": True}
    assert len(queries) == 1  # no transaction, no insert, no lock
    assert StripeEvent.objects.filter(event_id="evt_query_count").count() == 1
