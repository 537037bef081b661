"""What one layer accepts, the next can carry: pack sizes and prices the admin and the database
allow are creditable by the ledger; a ledger refusal after Stripe took the money is never lost;
one payment reconcile cannot settle does not stop the others."""

from __future__ import annotations

from http import HTTPStatus
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.urls import reverse

from billing import ledger
from billing.exceptions import CreditingRefused
from billing.models import MAX_AMOUNT, MAX_CREDITS_PER_CHANGE, CreditPack, LedgerEntry, Payment, Profile, StripeEvent
from scripts import localstripe_server
from tests import stripe_events as events
from tests.stripe_helpers import VISA, card, post_json
from tests.test_reconcile import intent_for, new_payment


@pytest.fixture
def stripe(localstripe):
    localstripe_server.reset(localstripe)
    return localstripe


def pack_form(**overrides) -> dict:
    return {"slug": "big", "name": "Big", "credits": "10", "amount": "1000", "currency": "usd", "active": "on"} | {
        key: str(value) for key, value in overrides.items()
    }


# --- packs: the admin and the database accept only what the ledger can credit ----------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("credits", 1_500_000_000), ("credits", MAX_CREDITS_PER_CHANGE + 1), ("amount", MAX_AMOUNT + 1), ("amount", 49)],
)
def test_the_admin_refuses_a_pack_the_ledger_or_stripe_could_not_carry(admin_client, field, value):
    response = admin_client.post(reverse("admin:billing_creditpack_add"), pack_form(**{field: value}))
    assert response.status_code == HTTPStatus.OK  # the form again, with its error
    assert response.context["adminform"].form.errors[field]
    assert not CreditPack.objects.filter(slug="big").exists()


def test_the_largest_pack_the_admin_allows_is_creditable(admin_client, user):
    response = admin_client.post(
        reverse("admin:billing_creditpack_add"), pack_form(credits=MAX_CREDITS_PER_CHANGE, amount=MAX_AMOUNT)
    )
    assert response.status_code == HTTPStatus.FOUND
    pack = CreditPack.objects.get(slug="big")
    for n in range(3):  # three of the largest packs: past any 32-bit balance
        ledger.add_credits(user, pack.credits, kind="purchase", reason=f"big pack {n}")
    assert ledger.get_balance(user) == 3 * MAX_CREDITS_PER_CHANGE


@pytest.mark.parametrize(("field", "value"), [("credits", MAX_CREDITS_PER_CHANGE + 1), ("amount", MAX_AMOUNT + 1)])
def test_the_database_refuses_a_pack_past_the_limits_whatever_writes_it(db, field, value):
    fields = {"slug": "raw", "name": "Raw", "credits": 1, "amount": 100, "currency": "usd", field: value}
    with pytest.raises(IntegrityError), transaction.atomic():
        CreditPack.objects.create(**fields)


# --- a ledger refusal after Stripe charged -------------------------------------------------


def near_the_64_bit_limit(user) -> None:
    """Deliberate corruption, for these tests only: a balance no real sequence of ledger changes
    reaches, so that the ledger refuses the next purchase."""
    ledger.add_credits(user, 1, kind="adjustment", reason="opening")
    Profile.objects.filter(user=user).update(credits=2**63 - 3)


@pytest.mark.postgres
def test_a_ledger_refusal_after_stripe_charged_answers_json_and_flags_the_payment(stripe, signed_in_client, user):
    near_the_64_bit_limit(user)
    entries = LedgerEntry.objects.count()

    response = post_json(signed_in_client, "/billing/charge/", {"pack": "starter", "payment_method": card(VISA)})

    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": CreditingRefused.default_message}
    payment = Payment.objects.get(user=user)
    assert payment.status == Payment.Status.PENDING  # not failed: Stripe has the money
    assert payment.stripe_payment_intent_id is None or payment.stripe_payment_intent_id.startswith("pi_")
    assert "could not be added" in payment.needs_attention
    assert LedgerEntry.objects.count() == entries

    # Staff fix the cause (here: undo the corruption), then reconcile credits it, once.
    Profile.objects.filter(user=user).update(credits=1)
    call_command("reconcile_payments", stdout=StringIO())
    payment.refresh_from_db()
    assert (payment.status, payment.needs_attention) == (Payment.Status.SUCCEEDED, "")
    assert ledger.get_balance(user) == 6


def test_the_admin_lists_payments_that_need_attention(admin_client, user):
    pack = CreditPack.objects.get(slug="starter")
    flagged = new_payment(user, pack, needs_attention="Stripe took the money but the credits could not be added")
    new_payment(user, pack)
    response = admin_client.get(reverse("admin:billing_payment_changelist"), {"attention": "yes"})
    assert list(response.context["cl"].result_list) == [flagged]


# --- reconcile: one bad payment does not stop the others -----------------------------------


@pytest.mark.postgres
def test_reconcile_settles_the_rest_when_one_payment_cannot_be_settled(stripe, user, other_user):
    pack = CreditPack.objects.get(slug="starter")
    stuck = new_payment(user, pack)
    intent_for(stuck)
    near_the_64_bit_limit(user)  # its owner's balance cannot take more
    later = new_payment(other_user, pack)
    intent_for(later)

    out = StringIO()
    with pytest.raises(CommandError, match="1 payment"):
        call_command("reconcile_payments", stdout=out)

    assert f"payment {stuck.pk} " in out.getvalue() and "ERROR: could not be settled" in out.getvalue()
    assert ledger.get_balance(other_user) == 5  # the unrelated payment was still credited
    later.refresh_from_db()
    stuck.refresh_from_db()
    assert later.status == Payment.Status.SUCCEEDED
    assert stuck.status == Payment.Status.PENDING and stuck.needs_attention


@pytest.mark.postgres
def test_a_ledger_refusal_in_the_webhook_fails_the_event_and_keeps_the_flag(client, user):
    payment = events.make_payment(user)
    near_the_64_bit_limit(user)
    response = events.post(client, events.intent_succeeded(payment))
    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR  # Stripe retries it
    assert response["Content-Type"] == "application/json"
    assert StripeEvent.objects.get().status == StripeEvent.Status.FAILED
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING
    assert "could not be added" in payment.needs_attention
    assert not LedgerEntry.objects.filter(payment=payment).exists()
