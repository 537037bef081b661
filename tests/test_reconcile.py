"""`manage.py reconcile_payments`: settling, from Stripe's facts, payments whose outcome we missed."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from billing import fulfilment, ledger, stripe_gateway
from billing.charges import intent_idempotency_key
from billing.exceptions import CardDeclined
from billing.models import CreditPack, LedgerEntry, Payment
from scripts import localstripe_server
from tests.stripe_helpers import DECLINED, THREE_D_SECURE, VISA, card, complete_3ds, post_json


@pytest.fixture
def stripe(localstripe):
    """localstripe, emptied: payment ids restart with each test database, so intents made by
    earlier tests could name the same payment id."""
    localstripe_server.reset(localstripe)
    return localstripe


@pytest.fixture
def pack(db):
    return CreditPack.objects.get(slug="starter")


def reconcile(*args) -> str:
    out = StringIO()
    call_command("reconcile_payments", *args, stdout=out)
    return out.getvalue()


def new_payment(user, pack, **fields) -> Payment:
    """A payment as the charge view records it before calling Stripe."""
    return Payment.objects.create(
        user=user, pack=pack, credits=pack.credits, amount=pack.amount, currency=pack.currency, **fields
    )


def intent_for(payment, number=VISA) -> stripe_gateway.Intent:
    """The PaymentIntent the charge view would have created for `payment` (its id not stored:
    as if the worker died, or the answer was lost, after Stripe accepted it)."""
    return stripe_gateway.create_payment_intent(
        amount=payment.amount,
        currency=payment.currency,
        payment_method=card(number),
        metadata={
            "payment_id": payment.pk,
            "payment_ref": payment.reference,
            "user_id": payment.user_id,
            "pack": payment.pack.slug,
        },
        idempotency_key=intent_idempotency_key(payment),
    )


def foreign_intent(metadata: dict) -> stripe_gateway.Intent:
    """A succeeded $5 intent that names one of our payment ids but was not made for it."""
    return stripe_gateway.create_payment_intent(
        amount=500, currency="usd", payment_method="pm_card_visa", metadata=metadata, idempotency_key="foreign"
    )


def snapshot(payment):
    payment.refresh_from_db()
    return (payment.status, payment.stripe_payment_intent_id, payment.updated_at, LedgerEntry.objects.count())


# --- crediting what the webhook never delivered --------------------------------------------------


def test_credits_a_payment_whose_intent_id_was_never_stored_then_does_nothing(stripe, user, pack):
    payment = new_payment(user, pack)
    intent = intent_for(payment)

    out = reconcile()

    assert f"payment {payment.pk} (pending, {intent.id}" in out
    assert "Stripe says succeeded -> credited 5 credits" in out
    assert "1 credited" in out
    payment.refresh_from_db()
    assert (payment.status, payment.stripe_payment_intent_id) == ("succeeded", intent.id)
    assert ledger.get_balance(user) == 5
    assert LedgerEntry.objects.get(payment=payment).kind == "purchase"

    before = snapshot(payment)
    again = reconcile()
    assert "Checked 0 payment(s)" in again and "0 credited" in again
    assert snapshot(payment) == before
    assert ledger.get_balance(user) == 5


def test_credits_a_payment_with_a_stored_intent_whose_webhook_never_came(stripe, user, pack):
    payment = new_payment(user, pack)
    fulfilment.attach_intent(payment, intent_id=intent_for(payment).id)

    assert "credited 5 credits" in reconcile()
    assert ledger.get_balance(user) == 5
    assert "0 credited" in reconcile()
    assert LedgerEntry.objects.filter(payment=payment).count() == 1


def test_a_failed_payment_that_succeeded_after_all_is_credited(stripe, user, pack):
    payment = new_payment(user, pack)
    intent = intent_for(payment, THREE_D_SECURE)
    fulfilment.fail_payment(payment, message="gave up waiting", intent_id=intent.id)
    complete_3ds(stripe, intent.id, intent.client_secret)

    assert "credited 5 credits" in reconcile()
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    assert ledger.get_balance(user) == 5


def test_already_credited_payments_are_not_checked(stripe, user, pack):
    payment = new_payment(user, pack)
    intent = intent_for(payment)
    fulfilment.fulfil_payment(payment, intent_id=intent.id, amount=500, currency="usd", source="charge")

    assert "Checked 0 payment(s)" in reconcile()
    assert LedgerEntry.objects.filter(payment=payment).count() == 1


# --- failing and waiting -------------------------------------------------------------------


def test_fails_a_pending_payment_that_stripe_declined(stripe, user, pack):
    payment = new_payment(user, pack)
    with pytest.raises(CardDeclined):
        intent_for(payment, DECLINED)  # the payment never learnt its intent: found by its metadata

    out = reconcile()

    assert "Stripe says requires_payment_method -> marked failed" in out
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED
    assert payment.failure_message == "Your card was declined."
    assert payment.stripe_payment_intent_id
    assert ledger.get_balance(user) == 0
    # Failed with Stripe's failure: re-checked next time, and left alone.
    before = snapshot(payment)
    assert "nothing to do" in reconcile()
    assert snapshot(payment) == before


def test_3ds_still_waiting_is_recorded_then_left_alone(stripe, user, pack):
    payment = new_payment(user, pack)
    intent = intent_for(payment, THREE_D_SECURE)

    assert "marked as waiting for 3-D Secure" in reconcile()
    payment.refresh_from_db()
    assert (payment.status, payment.stripe_payment_intent_id) == ("requires_action", intent.id)

    before = snapshot(payment)
    assert "nothing to do" in reconcile()
    assert snapshot(payment) == before
    assert ledger.get_balance(user) == 0


def test_a_payment_stripe_never_saw_is_reported_unknown_and_left(stripe, user, pack):
    payment = new_payment(user, pack)
    before = snapshot(payment)

    out = reconcile()

    assert f"payment {payment.pk} (pending, no intent id" in out
    assert "unknown, left as it is" in out and "1 unknown" in out
    assert snapshot(payment) == before


def test_an_intent_naming_the_payment_for_another_user_is_not_ours(stripe, user, other_user, pack):
    payment = new_payment(user, pack)
    foreign_intent({"payment_id": payment.pk, "user_id": other_user.pk})
    assert "unknown, left as it is: 1 PaymentIntent(s) name this payment id but not its reference" in reconcile()
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING
    assert ledger.get_balance(user) == 0


def test_an_intent_from_another_installation_with_the_same_ids_is_not_ours(stripe, user, pack):
    """A reset database (or a second environment on one Stripe account) reuses payment and user
    ids; the payment reference (id plus creation time) tells them apart."""
    payment = new_payment(user, pack)
    foreign_intent({"payment_id": payment.pk, "payment_ref": f"{payment.pk}-1", "user_id": user.pk})
    out = reconcile()
    assert "unknown, left as it is" in out
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING
    assert ledger.get_balance(user) == 0


def test_a_payment_no_intent_names_after_an_hour_is_closed_as_failed(stripe, user, pack):
    payment = new_payment(user, pack)
    Payment.objects.filter(pk=payment.pk).update(created_at=timezone.now() - timedelta(hours=2))

    out = reconcile()

    assert "closed as failed: it never reached Stripe" in out
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED
    assert payment.failure_message == "The payment never reached Stripe; no charge was made."
    assert ledger.get_balance(user) == 0
    assert "Checked 0 payment(s)" in reconcile()  # closed: not checked again


def test_an_hour_old_payment_some_intent_names_is_not_closed(stripe, user, pack, other_user):
    payment = new_payment(user, pack)
    Payment.objects.filter(pk=payment.pk).update(created_at=timezone.now() - timedelta(hours=2))
    foreign_intent({"payment_id": payment.pk, "user_id": other_user.pk})
    assert "unknown, left as it is" in reconcile()
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING


# --- options and failures ------------------------------------------------------------------


def test_dry_run_changes_nothing(stripe, user, pack):
    payment = new_payment(user, pack)
    intent_for(payment)
    before = snapshot(payment)

    out = reconcile("--dry-run")

    assert "would credit 5 credits" in out
    assert out.rstrip().splitlines()[-1].startswith("Dry run, nothing changed. Checked 1 payment(s)")
    assert snapshot(payment) == before
    assert ledger.get_balance(user) == 0
    assert "credited 5 credits" in reconcile()  # and the real run still does it


def test_since_days_limits_the_window(stripe, user, pack):
    payment = new_payment(user, pack)
    Payment.objects.filter(pk=payment.pk).update(created_at=timezone.now() - timedelta(days=5))
    payment.refresh_from_db()
    intent_for(payment)

    assert "Checked 0 payment(s) from the last 3 day(s)" in reconcile()
    assert ledger.get_balance(user) == 0
    assert "credited 5 credits" in reconcile("--since-days", "7")
    assert ledger.get_balance(user) == 5


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "99999999999999999999"])
def test_bad_since_days_is_a_clear_error(db, value):
    with pytest.raises(CommandError, match="--since-days must be a whole number"):
        reconcile("--since-days", value)


def test_stripe_unreachable_is_an_error_and_changes_nothing(stripe, settings, user, pack):
    credited_later = new_payment(user, pack)
    intent_for(credited_later)
    waiting = new_payment(user, pack)
    intent = intent_for(waiting)
    fulfilment.attach_intent(waiting, intent_id=intent.id)
    before = [snapshot(credited_later), snapshot(waiting)]
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{localstripe_server.free_port()}"

    with pytest.raises(CommandError, match="Stripe could not be reached; nothing was changed"):
        reconcile()

    assert [snapshot(credited_later), snapshot(waiting)] == before
    assert ledger.get_balance(user) == 0


def test_an_intent_stripe_does_not_know_is_an_error_for_that_payment_only(stripe, user, pack):
    lost = new_payment(user, pack)
    fulfilment.attach_intent(lost, intent_id="pi_doesnotexist")
    fine = new_payment(user, pack)
    intent_for(fine)

    out = StringIO()
    with pytest.raises(CommandError, match="1 payment"):
        call_command("reconcile_payments", stdout=out)

    assert f"payment {lost.pk} (pending, pi_doesnotexist" in out.getvalue()
    assert "ERROR: Stripe refused to show the intent" in out.getvalue()
    assert ledger.get_balance(user) == 5  # the other payment was still settled
    lost.refresh_from_db()
    assert lost.status == Payment.Status.PENDING


def test_a_charge_stripe_never_saw_stays_pending_and_is_reported(stripe, settings, signed_in_client, user, pack):
    """End to end: Stripe unreachable during the charge (503, payment pending); reconcile finds
    no intent for it and leaves it, crediting nothing."""
    live = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{localstripe_server.free_port()}"
    assert (
        post_json(
            signed_in_client, "/billing/charge/", {"pack": "starter", "payment_method": "pm_card_visa"}
        ).status_code
        == 503
    )
    payment = Payment.objects.get(user=user)
    settings.STRIPE_API_BASE = live

    assert "unknown, left as it is" in reconcile()  # Stripe never saw it: nothing to credit
    assert ledger.get_balance(user) == 0
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING
