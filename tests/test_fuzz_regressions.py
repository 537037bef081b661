"""What the hostile-input run found, pinned as plain tests so CI always replays them (the fuzzers
in CI draw only a few hundred inputs and may not meet these again):

- a credit change beyond the database's integer (adjust_credits 10**30, or a sum past 2**31 - 1
  on PostgreSQL) was a crash (a 500 in the admin, a traceback from the command) on PostgreSQL,
  and on SQLite silently stored a ten-billion-credit balance;
- a NUL character in a reason or an email, or in a signed webhook body ("\\u0000"), reached
  PostgreSQL, which refuses it: a crash (and the webhook's failure could not even be recorded);
- show_credits --limit 2**63 overflowed the database's LIMIT;
- a signed webhook body with NaN or Infinity (which Python's JSON parser accepts) crashed on
  PostgreSQL's jsonb;
- adjust_credits cut a reason longer than 255 characters short without a word.

Each now ends in a clear refusal that changes nothing."""

import json
import uuid
from http import HTTPStatus
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from billing import ledger
from billing.models import LedgerEntry, Profile, StripeEvent
from tests import fuzzing
from tests import stripe_events as events

HUGE = [10**30, -(10**30), 2**63, ledger.MAX_DELTA + 1, -(ledger.MAX_DELTA + 1)]


# --- the ledger ---------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [a for a in HUGE if a > 0])
def test_the_ledger_refuses_an_absurd_amount(user, amount):
    before = fuzzing.money_state()
    with pytest.raises(ValueError, match="at most 1,000,000,000"):
        ledger.add_credits(user, amount, kind=LedgerEntry.Kind.BONUS, reason="typo")
    with pytest.raises(ValueError, match="at most 1,000,000,000"):
        ledger.spend_credits(user, amount, reason="typo")
    assert fuzzing.money_state() == before


@pytest.mark.parametrize("delta", HUGE)
def test_the_ledger_refuses_an_absurd_adjustment(user, admin_user, delta):
    before = fuzzing.money_state()
    with pytest.raises(ValueError, match="at most 1,000,000,000"):
        ledger.adjust_credits(user, delta, reason="typo", actor=admin_user)
    assert fuzzing.money_state() == before


def test_the_largest_allowed_change_still_works(user, admin_user):
    ledger.adjust_credits(user, ledger.MAX_DELTA, reason="big but allowed", actor=admin_user)
    assert ledger.get_balance(user) == ledger.MAX_DELTA


def near_the_64_bit_limit(user) -> None:
    """Deliberate corruption, for the tests below only: a balance just under PostgreSQL's bigint
    limit, which no real sequence of ledger changes reaches (they are at most MAX_DELTA each)."""
    ledger.add_credits(user, 1, kind=LedgerEntry.Kind.BONUS, reason="one")
    Profile.objects.filter(user=user).update(credits=2**63 - 10)


def test_a_balance_past_32_bits_is_kept(user):
    """Balances are 64-bit: three of the largest allowed changes (past 2**31) are credited."""
    for n in range(3):
        ledger.add_credits(user, ledger.MAX_DELTA, kind=LedgerEntry.Kind.BONUS, reason=f"big {n}")
    assert ledger.get_balance(user) == 3 * ledger.MAX_DELTA > 2**31
    ledger.spend_credits(user, 1, reason="still spendable")
    assert ledger.get_balance(user) == 3 * ledger.MAX_DELTA - 1


@pytest.mark.postgres
def test_a_balance_past_the_databases_integer_is_refused_cleanly(user, admin_user):
    near_the_64_bit_limit(user)
    before = fuzzing.money_state()
    with pytest.raises(ValueError, match="cannot take"):
        ledger.add_credits(user, 100, kind=LedgerEntry.Kind.BONUS, reason="past the limit")
    assert fuzzing.money_state() == before
    ledger.spend_credits(user, 1, reason="the connection and the balance still work")
    assert ledger.get_balance(user) == 2**63 - 11


@pytest.mark.parametrize(("reason", "key"), [("nul\x00byte", None), ("fine", "key\x00nul"), ("fine", "k" * 256)])
def test_the_ledger_refuses_what_postgresql_cannot_store(user, reason, key):
    before = fuzzing.money_state()
    with pytest.raises(ValueError):
        ledger.add_credits(user, 1, kind=LedgerEntry.Kind.BONUS, reason=reason, idempotency_key=key)
    assert fuzzing.money_state() == before


# --- the commands -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alice@example.com", str(10**30), "--reason", "typo"], "at most 1,000,000,000"),
        (["alice@example.com", str(-(2**63)), "--reason", "typo"], "at most 1,000,000,000"),
        (["alice@example.com", "5", "--reason", "nul\x00byte"], "NUL"),
        (["alice@example.com\x00", "5", "--reason", "ok"], "no user with email"),
        (["alice@example.com", "5", "--reason", "a" * 256], "at most 255 characters"),
    ],
)
def test_adjust_credits_refuses_clearly(user, args, message):
    ledger.add_credits(user, 10, kind=LedgerEntry.Kind.BONUS, reason="opening")
    before = fuzzing.money_state()
    with pytest.raises(CommandError, match=message):
        call_command("adjust_credits", *args, stdout=StringIO(), stderr=StringIO())
    assert fuzzing.money_state() == before


@pytest.mark.postgres
def test_adjust_credits_past_the_databases_integer_is_a_clear_error(user):
    near_the_64_bit_limit(user)
    before = fuzzing.money_state()
    with pytest.raises(CommandError, match="cannot take"):
        call_command("adjust_credits", user.email, str(ledger.MAX_DELTA), "--reason", "three", stdout=StringIO())
    assert fuzzing.money_state() == before


@pytest.mark.parametrize("limit", [str(2**63), str(10**30), "10001"])
def test_show_credits_refuses_an_absurd_limit(user, limit):
    with pytest.raises(CommandError, match="--limit must be a whole number from 1 to 10,000"):
        call_command("show_credits", user.email, "--limit", limit, stdout=StringIO())


def test_show_credits_with_a_nul_in_the_email_is_an_unknown_user(user):
    with pytest.raises(CommandError, match="no user with email"):
        call_command("show_credits", "alice@example.com\x00", stdout=StringIO())


# --- the admin ----------------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [str(10**10), str(-(10**30)), str(ledger.MAX_DELTA + 1)])
def test_the_admin_adjust_form_refuses_an_absurd_delta(admin_client, user, delta):
    ledger.add_credits(user, 10, kind=LedgerEntry.Kind.BONUS, reason="opening")
    before = fuzzing.money_state()
    response = admin_client.post(
        reverse("admin:billing_profile_adjust", args=[user.profile.pk]),
        {"delta": delta, "reason": "typo", "request_id": str(uuid.uuid4())},
    )
    assert response.status_code == HTTPStatus.OK  # the form again, with its error
    assert response.context["form"].errors["delta"]
    assert fuzzing.money_state() == before


@pytest.mark.postgres
def test_the_admin_adjust_form_past_the_databases_integer_shows_an_error(admin_client, user):
    near_the_64_bit_limit(user)
    before = fuzzing.money_state()
    response = admin_client.post(
        reverse("admin:billing_profile_adjust", args=[user.profile.pk]),
        {"delta": str(ledger.MAX_DELTA), "reason": "three", "staff_note": "fuzz", "request_id": str(uuid.uuid4())},
    )
    assert response.status_code == HTTPStatus.OK
    assert "cannot take" in str(response.context["form"].errors["delta"])
    assert fuzzing.money_state() == before


# --- the webhook --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    ["event id", "event type", "deep in the object", "a key", "a lone surrogate", "NaN", "Infinity", "-Infinity"],
)
def test_a_signed_event_postgresql_cannot_store_is_refused_not_a_crash(client, user, where):
    payment = events.make_payment(user)
    event = events.intent_succeeded(payment)
    if where == "event id":
        event["id"] = "evt_\x00"
    elif where == "event type":
        event["type"] = "payment_intent.succeeded\x00"
    elif where == "deep in the object":
        event["data"]["object"]["metadata"]["note"] = "a\x00b"
    elif where == "a key":
        event["data"]["object"]["\x00"] = 1
    elif where == "a lone surrogate":
        event["data"]["object"]["description"] = "\ud800"
    else:  # Python's JSON parser reads these tokens; PostgreSQL's jsonb refuses them
        event["data"]["object"]["charge"] = float(where.lower().replace("infinity", "inf"))
    before = fuzzing.money_state()
    response = events.post(client, json.dumps(event).encode())
    assert response.status_code == HTTPStatus.BAD_REQUEST, response.content
    assert response.json() == {"error": "Invalid payload."}
    assert not StripeEvent.objects.exists()
    assert fuzzing.money_state() == before
    assert not LedgerEntry.objects.filter(payment=payment).exists()
