"""Hostile input, property-based (hypothesis), on the endpoints that take money: POST
/billing/charge/, POST /api/stripe and POST /billing/charge/<id>/confirm/, against the live
localstripe (inputs that pass our own checks really reach it).

Properties, for every input: never a 5xx; always a JSON answer; a success credits exactly the
pack's credits for the pack's price, whatever else the body says; a refused input changes no
balance and no ledger, and leaves at most one new payment, marked failed, when Stripe itself
refused the card (input refused before Stripe creates nothing at all).

Sizes: tests/fuzzing.py (a few hundred inputs in CI, over 10,000 across all fuzz tests in
`make reliability`)."""

import json
from http import HTTPStatus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing import ledger
from billing.models import CreditPack, Payment
from tests import fuzzing
from tests.stripe_helpers import THREE_D_SECURE, card, post_json

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")

JSON_VALUES = fuzzing.json_values(text=40, width=4, key=12, leaves=12)
PACKS = st.one_of(
    st.sampled_from(
        ["starter", "starter", "retired", "STARTER", "starter ", " starter", "", "../starter", "starter\x00"]
    ),
    st.text(max_size=60),
    JSON_VALUES,
)
PAYMENT_METHODS = st.one_of(
    st.sampled_from(
        [
            "pm_card_visa",
            "pm_card_chargeCustomerFail",
            "pm_",
            "pm_doesnotexist",
            "pm_card_visa\n",
            "PM_CARD_VISA",
            "tok_visa",
            "src_123",
            "card_123",
            "pm_" + "a" * 201,
            "pm_card_visa' OR '1'='1",
        ]
    ),
    st.from_regex(r"pm_[A-Za-z0-9_]{1,24}", fullmatch=True),
    st.text(max_size=80),
    JSON_VALUES,
)
# What a client might add to trick the server into another price or pack.
EXTRAS = st.dictionaries(
    st.sampled_from(["amount", "credits", "currency", "price", "pack_id", "user", "user_id", "status", "id"]),
    JSON_VALUES,
    max_size=3,
)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/json", "text/plain", "application/x-www-form-urlencoded", "application/xml", ""]
)


def charge_bodies(field: str):
    """Mostly well-shaped objects with hostile values; sometimes anything at all."""
    shaped = st.builds(
        lambda pack, pm, extra, drop: {k: v for k, v in {**extra, "pack": pack, field: pm}.items() if k not in drop},
        PACKS,
        PAYMENT_METHODS,
        EXTRAS,
        st.sets(st.sampled_from(["pack", field]), max_size=1),
    ).map(lambda obj: json.dumps(obj).encode())
    anything = st.one_of(
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        st.sampled_from([b"", b"{", b'{"pack": "starter", "pack": "retired"}', b"[" * 5000, b'"' * 10_000]),
    )
    return st.one_of(shaped, shaped, shaped, anything)


@pytest.fixture
def fuzz_env(localstripe, settings, user, db):
    settings.BILLING_CHARGE_RATE_LIMIT = "off"  # thousands of requests from one user, on purpose
    CreditPack.objects.create(slug="retired", name="Retired", credits=1, amount=100, active=False)
    return user


def parse(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def check_answer(target, response, before, user, body, *, pm_field, names_pack, success_shape):
    """The properties every charge-like answer must have."""
    status = response.status_code
    assert status < 500, (status, body[:200], response.content[:300])
    assert status in (HTTPStatus.OK, HTTPStatus.BAD_REQUEST, HTTPStatus.PAYMENT_REQUIRED), (status, body[:200])
    answer = response.json()
    after = fuzzing.money_state()
    sent = parse(body)
    new_payments = [row for row in after["payment_rows"] if row not in before["payment_rows"]]
    refused_by = "" if status == HTTPStatus.OK else " by Stripe" if new_payments else " before Stripe"
    fuzzing.record(target, f"{status}{refused_by}")
    if status == HTTPStatus.OK:
        success_shape(answer)
        assert ledger.get_balance(user) == before["balances"][user.pk] + 5
        assert after["ledger"]["n"] == before["ledger"]["n"] + 1
        payment = Payment.objects.get(pk=new_payments[0][0])
        # The server's price, whatever the body said about amounts or currencies.
        assert (payment.pack.slug, payment.amount, payment.currency, payment.credits) == ("starter", 500, "usd", 5)
        assert payment.status == Payment.Status.SUCCEEDED
    else:
        assert isinstance(answer.get("error"), str) and answer["error"], answer
        assert after["balances"] == before["balances"]
        assert after["ledger"] == before["ledger"]
        # /api/stripe always buys the default pack, whatever "pack" the body names.
        right_pack = not names_pack or (isinstance(sent, dict) and sent.get("pack") == "starter")
        reached_stripe = isinstance(sent, dict) and right_pack and isinstance(sent.get(pm_field), str)
        if not reached_stripe:
            assert new_payments == [], (body[:200], new_payments)
        assert len(new_payments) <= 1
        assert all(row[1] == Payment.Status.FAILED for row in new_payments), new_payments
    fuzzing.assert_ledger_invariant()


@fuzzing.fuzz_settings("charge")
@given(body=charge_bodies("payment_method"), content_type=CONTENT_TYPES)
def test_fuzz_charge(fuzz_env, client, body, content_type):
    user = fuzz_env
    client.force_login(user)
    before = fuzzing.money_state()
    response = client.post("/billing/charge/", data=body, content_type=content_type)

    def success_shape(answer):
        assert answer["status"] == "succeeded" and answer["added"] == 5
        assert answer["credits"] == before["balances"][user.pk] + 5

    check_answer(
        "charge", response, before, user, body, pm_field="payment_method", names_pack=True, success_shape=success_shape
    )


@fuzzing.fuzz_settings("api_stripe")
@given(body=charge_bodies("id"), content_type=CONTENT_TYPES)
def test_fuzz_api_stripe(fuzz_env, client, body, content_type):
    """The original client's endpoint: {"id": "pm_..."} charges the default pack."""
    user = fuzz_env
    client.force_login(user)
    before = fuzzing.money_state()
    response = client.post("/api/stripe", data=body, content_type=content_type)

    def success_shape(answer):
        payment = answer.pop("payment")
        assert answer == {"id": user.pk, "email": user.email, "credits": before["balances"][user.pk] + 5}
        assert (payment["status"], payment["client_secret"]) == ("succeeded", None)

    check_answer(
        "api_stripe", response, before, user, body, pm_field="id", names_pack=False, success_shape=success_shape
    )


# --- confirm ------------------------------------------------------------------------------------


@pytest.fixture
def payments(fuzz_env, other_user, client):
    """The user's payments in every state (one really waiting for 3-D Secure at localstripe),
    and another user's."""
    user = fuzz_env
    pack = CreditPack.objects.get(slug="starter")

    def make(owner, status, intent=None):
        return Payment.objects.create(
            user=owner,
            pack=pack,
            credits=5,
            amount=500,
            currency="usd",
            status=status,
            stripe_payment_intent_id=intent,
        ).pk

    ids = {
        "succeeded": make(user, "succeeded", "pi_fuzz_done"),
        "pending": make(user, "pending"),
        "unknown intent": make(user, "pending", "pi_fuzz_unknown_at_stripe"),
        "other's": make(other_user, "pending", "pi_fuzz_other"),
    }
    ledger.add_credits(user, 5, kind="purchase", reason="fuzz seed", payment=Payment.objects.get(pk=ids["succeeded"]))
    client.force_login(user)
    waiting = post_json(client, "/billing/charge/", {"pack": "starter", "payment_method": card(THREE_D_SECURE)})
    assert waiting.json()["status"] == "requires_action"
    ids["3-D Secure"] = waiting.json()["payment"]
    declined = post_json(
        client, "/billing/charge/", {"pack": "starter", "payment_method": "pm_card_chargeCustomerFail"}
    )
    assert declined.status_code == HTTPStatus.PAYMENT_REQUIRED
    ids["failed"] = Payment.objects.get(user=user, status="failed").pk
    return ids


@fuzzing.fuzz_settings("confirm")
@given(data=st.data())
def test_fuzz_confirm(payments, client, data):
    """Any id (own in every state, another user's, none, huge), any body, any method: the answer
    is one of the documented ones, and asking never changes anything."""
    which = data.draw(
        st.one_of(
            st.sampled_from(sorted(payments)).map(lambda k: (k, payments[k])),
            st.integers(min_value=0, max_value=2**80)
            .filter(lambda n: n not in payments.values())
            .map(lambda n: ("random", n)),
        ),
        label="payment",
    )
    body = data.draw(
        st.one_of(st.binary(max_size=200), JSON_VALUES.map(lambda v: json.dumps(v).encode())), label="body"
    )
    method = data.draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]), label="method")
    before = fuzzing.money_state()
    response = client.generic(
        method, f"/billing/charge/{which[1]}/confirm/", data=body, content_type="application/json"
    )
    status = response.status_code
    fuzzing.record("confirm", status)
    assert status < 500, (which, status, response.content[:300])
    expected = {
        "succeeded": HTTPStatus.OK,
        "failed": HTTPStatus.PAYMENT_REQUIRED,
        "pending": HTTPStatus.CONFLICT,
        "unknown intent": HTTPStatus.BAD_REQUEST,
        "other's": HTTPStatus.NOT_FOUND,
        "3-D Secure": HTTPStatus.OK,
        "random": HTTPStatus.NOT_FOUND,
    }[which[0]]
    if method != "POST":
        expected = HTTPStatus.METHOD_NOT_ALLOWED
    assert status == expected, (which, method, status, response.content[:300])
    if status != HTTPStatus.NOT_FOUND or which[0] != "random":
        assert response["Content-Type"] == "application/json"
    assert fuzzing.money_state() == before
