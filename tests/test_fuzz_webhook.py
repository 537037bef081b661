"""Hostile input, property-based, on POST /billing/webhook/.

Signed with the right secret (what only Stripe, or someone holding the secret, can send):
events of every handled type and others, built from the documented Stripe shapes with any
field replaced by something hostile (wrong types, huge or negative amounts, other currencies,
other users' payment ids, ids that do not exist), duplicates of earlier events, and bodies that
are not events at all. Properties:
- never a crash: the answer is 200, 400, or the deliberate 500 that tells Stripe to retry an
  event that is ours but cannot be applied, stored as `failed` with a reason this code raises
  on purpose (a mismatch or an unknown payment), never an unexpected exception;
- 400 stores nothing and changes nothing; 500 and duplicates change no money;
- money moves only as a genuine event says: a payment is credited only by a succeeded event
  naming it with its own amount and currency, and the ledger invariant always holds.

Unsigned, badly signed, stale or tampered deliveries of anything: always 400, nothing stored.
"""

import itertools
import json
import time
from http import HTTPStatus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing import fulfilment, ledger
from billing.models import LedgerEntry, Payment, StripeEvent
from tests import fuzzing
from tests import stripe_events as events
from tests.stripe_helpers import signed_headers

HANDLED = [
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
    "refund.failed",
]
# Also handled, with the shape of one of the above (the fuzzed fields are the same).
SAME_SHAPE = {
    "charge.dispute.funds_withdrawn": "charge.dispute.created",
    "charge.dispute.closed": "charge.dispute.created",
    "charge.dispute.funds_reinstated": "charge.dispute.created",
    "charge.refund.updated": "refund.failed",
    "refund.updated": "refund.failed",
}
# What the webhook may answer 500 for, on purpose: the event is ours but cannot be applied.
DELIBERATE_FAILURES = ("PaymentMismatch:", "UnknownPayment:")
JSON_VALUES = fuzzing.json_values(text=30, width=3, key=10, leaves=8)
AMOUNTS = st.one_of(
    st.sampled_from([500, 500, 500, 250, 499, 501, 0, -500, 1000, 2**31, 2**63, 10**30, "500", 500.0, 5e2, None]),
    st.integers(),
    JSON_VALUES,
)
CURRENCIES = st.one_of(st.sampled_from(["usd", "usd", "USD", "eur", "", "us", "usd\x00"]), JSON_VALUES)
fresh_ids = (f"evt_fuzz_{n}" for n in itertools.count())


@pytest.fixture
def pool(user, other_user, localstripe):  # events naming only a charge make the webhook ask Stripe
    """Payments of two users in the states events act on: pending, credited, credited and
    partly spent (so a clawback meets a short balance)."""
    made = {
        "pending": events.make_payment(user),
        "pending other": events.make_payment(other_user),
        "credited": events.make_payment(user),
        "spent": events.make_payment(other_user),
    }
    for key in ("credited", "spent"):
        payment = made[key]
        fulfilment.fulfil_payment(
            payment, intent_id=payment.stripe_payment_intent_id, amount=500, currency="usd", source="test"
        )
    ledger.spend_credits(other_user, 4, reason="spent before the refund")
    return made


def hostile_event(draw, pool, seen_ids):
    """A Stripe event of the documented shape with hostile values."""
    event_type = draw(
        st.one_of(st.sampled_from(HANDLED + sorted(SAME_SHAPE)), st.sampled_from(HANDLED), st.text(max_size=40)),
        label="type",
    )
    template = SAME_SHAPE.get(event_type, event_type)
    if template not in HANDLED:
        template = draw(st.sampled_from(HANDLED), label="shape")
    payment = pool[draw(st.sampled_from(sorted(pool)), label="payment")]
    if template == "payment_intent.succeeded":
        event = events.intent_succeeded(payment)
    elif template == "payment_intent.payment_failed":
        event = events.intent_failed(payment)
    elif template == "charge.refunded":
        event = events.charge_refunded(
            payment, refunds=draw(st.lists(st.integers(0, 600), min_size=1, max_size=3), label="refunds")
        )
    elif template == "refund.failed":
        event = events.refund_updated(
            payment,
            refund_id="re_fuzz1",
            amount=draw(st.integers(0, 600), label="refund"),
            charge=events.charge_id(payment),
        )
    else:
        event = events.dispute_created(payment)
    event["type"] = event_type
    obj = event["data"]["object"]
    other = pool[draw(st.sampled_from(sorted(pool)), label="other payment")]
    mutations = {
        "amount": AMOUNTS,
        "amount_received": AMOUNTS,
        "amount_refunded": AMOUNTS,
        "currency": CURRENCIES,
        "id": st.one_of(st.just(other.stripe_payment_intent_id), st.text(max_size=30), JSON_VALUES),
        "metadata": st.one_of(
            st.just({"payment_id": str(other.pk)}),
            st.dictionaries(st.just("payment_id"), st.one_of(st.text(max_size=25), JSON_VALUES), max_size=1),
            JSON_VALUES,
        ),
        "payment_intent": st.one_of(st.just(other.stripe_payment_intent_id), JSON_VALUES),
        "charge": JSON_VALUES,
        "status": JSON_VALUES,
        "last_payment_error": JSON_VALUES,
    }
    for field in draw(st.sets(st.sampled_from(sorted(mutations)), max_size=3), label="mutated"):
        obj[field] = draw(mutations[field], label=field)
    if draw(st.booleans(), label="drop a field") and obj:
        obj.pop(draw(st.sampled_from(sorted(obj)), label="dropped"))
    # Every draw happens whatever the database holds, so hypothesis can replay an example.
    which_id = draw(st.sampled_from(["fresh", "fresh", "fresh", "repeat", "hostile"]), label="event id")
    repeat_index = draw(st.integers(min_value=0, max_value=10**6), label="repeated id")
    hostile_id = draw(st.one_of(st.text(max_size=300), JSON_VALUES), label="hostile id")
    if which_id == "repeat" and seen_ids:
        event["id"] = sorted(seen_ids)[repeat_index % len(seen_ids)]
    elif which_id == "hostile":
        event["id"] = hostile_id
    else:
        event["id"] = next(fresh_ids)
    return event


def new_purchases(before_ids):
    return list(
        LedgerEntry.objects.filter(kind="purchase").exclude(id__in=before_ids).values_list("payment_id", flat=True)
    )


@fuzzing.fuzz_settings("webhook_signed")
@given(data=st.data())
def test_fuzz_webhook_with_a_valid_signature(pool, client, data):
    seen_ids = set(StripeEvent.objects.values_list("event_id", flat=True))
    shape = data.draw(st.sampled_from(["event"] * 6 + ["json", "bytes"]), label="body kind")
    if shape == "event":
        event = hostile_event(data.draw, pool, seen_ids)
        body = json.dumps(event).encode()
    elif shape == "json":
        event, body = None, json.dumps(data.draw(JSON_VALUES, label="json")).encode()
    else:
        event, body = None, data.draw(st.binary(max_size=400), label="bytes")

    before = fuzzing.money_state()
    purchase_ids = set(LedgerEntry.objects.filter(kind="purchase").values_list("id", flat=True))
    stored_before = StripeEvent.objects.count()
    response = client.post(events.WEBHOOK_URL, body, content_type="application/json", **signed_headers(body))
    status = response.status_code
    answer = response.json()
    after = fuzzing.money_state()

    event_id = event.get("id") if isinstance(event, dict) else None
    if status == HTTPStatus.INTERNAL_SERVER_ERROR:
        stored = StripeEvent.objects.filter(event_id=event_id).first() if isinstance(event_id, str) else None
        assert stored is not None and stored.status == "failed", (status, answer)
        assert stored.error.startswith(DELIBERATE_FAILURES), stored.error  # never an unexpected crash
        fuzzing.record("webhook_signed", f"500 {stored.error.split(':')[0]}")
    else:
        fuzzing.record("webhook_signed", status if status != HTTPStatus.OK else f"200 {answer.get('status')}")
    assert status in (HTTPStatus.OK, HTTPStatus.BAD_REQUEST, HTTPStatus.INTERNAL_SERVER_ERROR), (status, body[:300])

    if status == HTTPStatus.BAD_REQUEST:
        assert StripeEvent.objects.count() == stored_before
        assert after == before
    if status == HTTPStatus.INTERNAL_SERVER_ERROR or (status == HTTPStatus.OK and answer.get("duplicate")):
        assert {k: v for k, v in after.items() if k != "events"} == {k: v for k, v in before.items() if k != "events"}
    for payment_id in new_purchases(purchase_ids):
        # Credited only by a succeeded event naming this payment, at its own price.
        obj = event["data"]["object"]
        assert event["type"] == "payment_intent.succeeded", event["type"]
        payment = Payment.objects.get(pk=payment_id)
        assert obj.get("amount_received") or obj.get("amount") == payment.amount
        assert str(obj.get("currency", "")).lower() == payment.currency
        assert LedgerEntry.objects.filter(payment=payment, kind="purchase").count() == 1
    fuzzing.assert_ledger_invariant()


@fuzzing.fuzz_settings("webhook_unsigned")
@given(data=st.data())
def test_fuzz_webhook_without_a_valid_signature(pool, client, data):
    body = data.draw(
        st.one_of(
            st.builds(lambda p: json.dumps(events.intent_succeeded(pool[p])).encode(), st.sampled_from(sorted(pool))),
            JSON_VALUES.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=300),
        ),
        label="body",
    )
    how = data.draw(st.sampled_from(["none", "garbage", "wrong secret", "stale", "tampered"]), label="how")
    if how == "none":
        headers = {}
    elif how == "garbage":
        headers = {"HTTP_STRIPE_SIGNATURE": data.draw(st.text(max_size=120), label="header")}
    elif how == "wrong secret":
        headers = signed_headers(body, secret="whsec_" + data.draw(st.text(min_size=1, max_size=20), label="secret"))
    elif how == "stale":
        headers = signed_headers(body, timestamp=int(time.time()) - data.draw(st.integers(301, 10**9), label="age"))
    else:
        headers = signed_headers(body)
        body = body + data.draw(st.binary(min_size=1, max_size=5), label="appended")
    before = fuzzing.money_state()
    response = client.post(events.WEBHOOK_URL, body, content_type="application/json", **headers)
    fuzzing.record("webhook_unsigned", response.status_code)
    assert response.status_code == HTTPStatus.BAD_REQUEST, (how, response.content[:200])
    assert response.json()["error"]
    assert fuzzing.money_state() == before
