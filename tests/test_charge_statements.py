"""What POST /billing/charge/ costs in SQL, and the one-statement credit it ends with
(billing.ledger.credit_purchase): the same answers as the locking path it short-cuts, and that
path still taking over whenever the short cut does not apply.

The statement counts are contract tests of the implementation (bench/NOTES.md, "Charge
overhead"): they are meant to move when the implementation changes, never silently upwards.
"""

from __future__ import annotations

import multiprocessing
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from billing import fulfilment, ledger
from billing.exceptions import PaymentMismatch
from billing.models import CreditGrant, LedgerEntry, Payment, Profile
from tests import stripe_events as events
from tests.conftest import run_in_processes
from tests.stripe_helpers import post_json

CHARGE = "/billing/charge/"
BUY = {"pack": "starter", "payment_method": "pm_card_visa"}
# Session, user, the rate limit's count, the pack, the Payment (committed before Stripe is
# called), the credit with the payment marked succeeded (and the receipt it owes recorded), and
# the receipt's sending enqueued once that committed (one INSERT with the database task backend).
POSTGRES_STATEMENTS = 7
DATABASE_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def charge_statements(client) -> list[str]:
    # The task backend a deployment uses: the receipt is enqueued, not sent inside the request.
    with override_settings(TASKS=DATABASE_TASKS), CaptureQueriesContext(connection) as queries:
        response = post_json(client, CHARGE, BUY)
    assert response.status_code == HTTPStatus.OK, response.content
    assert response.json()["status"] == "succeeded"
    return [" ".join(query["sql"].split()) for query in queries]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # autocommit, as in production: no test transaction around it
def test_a_charge_is_seven_statements_on_postgresql(localstripe, signed_in_client, user):
    statements = charge_statements(signed_in_client)

    assert len(statements) == POSTGRES_STATEMENTS, "\n".join(statements)
    assert not [s for s in statements if s.startswith(("BEGIN", "SAVEPOINT", "COMMIT")) or "FOR UPDATE" in s]
    assert sum(s.startswith('INSERT INTO "billing_payment"') for s in statements) == 1
    # The rate limit counts and does nothing else (billing_periodic clears ended windows).
    assert not [s for s in statements if "ratelimitcounter" in s and not s.startswith("INSERT")]
    # The credit and the payment's status change are one statement, and nothing but the receipt's
    # enqueue follows it (no balance read): the answer's balance came back with the credit.
    assert statements[-2].startswith("WITH p AS ( UPDATE billing_payment")
    assert statements[-1].startswith('INSERT INTO "django_tasks_database_dbtaskresult"'), statements[-1]
    assert Payment.objects.get(user=user).status == Payment.Status.SUCCEEDED


def test_a_charge_never_locks_or_saves_the_payment_twice(localstripe, signed_in_client, user):
    statements = charge_statements(signed_in_client)

    assert not [s for s in statements if "FOR UPDATE" in s]
    assert sum(s.startswith('UPDATE "billing_payment"') for s in statements) <= 1
    assert not [s for s in statements if s.startswith("DELETE")]
    assert ledger.get_balance(user) == 5


def test_the_answered_balance_leaves_out_credits_on_hold(localstripe, signed_in_client, user):
    ledger.add_credits(user, 7, kind=LedgerEntry.Kind.BONUS, reason="welcome")
    ledger.hold_credits(user, 4, reason="export running")

    response = post_json(signed_in_client, CHARGE, BUY)

    assert response.json()["credits"] == 7 - 4 + 5 == ledger.get_balance(user)


def test_the_answered_balance_leaves_out_expired_credits_not_yet_swept(localstripe, signed_in_client, user):
    ledger.grant_credits(user, 3, reason="trial", expires_at=timezone.now() + timedelta(days=1))
    past = timezone.now() - timedelta(seconds=1)
    CreditGrant.objects.filter(profile__user=user).update(expires_at=past)
    Profile.objects.filter(user=user).update(next_expiry=past)

    response = post_json(signed_in_client, CHARGE, BUY)

    assert response.json()["credits"] == 5 == ledger.get_balance(user)


# --- the one-statement credit against the locking path -----------------------------------------


def fulfil(payment, intent_id=None, **facts):
    facts = {"amount": 500, "currency": "usd", **facts}
    return fulfilment.fulfil_payment(
        payment, intent_id=intent_id or payment.stripe_payment_intent_id, source="test", **facts
    )


def test_an_open_payment_is_credited_once_and_marked_succeeded(user):
    payment = events.make_payment(user, status=Payment.Status.FAILED)
    Payment.objects.filter(pk=payment.pk).update(failure_message="declined", needs_attention="look")

    first = fulfil(payment)
    again = fulfil(payment)

    assert first.newly_credited and not again.newly_credited
    assert first.entry.pk == again.entry.pk and first.available == 5
    stored = Payment.objects.get(pk=payment.pk)
    assert (stored.status, stored.failure_message, stored.needs_attention) == ("succeeded", "", "")
    assert payment.status == Payment.Status.FAILED  # the caller's instance is left as it was
    assert LedgerEntry.objects.filter(payment=payment, kind=LedgerEntry.Kind.PURCHASE).count() == 1
    assert CreditGrant.objects.get(payment=payment).remaining == 5
    assert ledger.get_balance(user) == 5


def test_a_payment_refunded_before_it_succeeded_is_credited_and_clawed_back(user):
    payment = events.make_payment(user)
    fulfilment.record_refund(payment, amount_refunded=500)

    fulfil(payment)

    stored = Payment.objects.get(pk=payment.pk)
    assert (stored.status, stored.credits_clawed_back) == (Payment.Status.REFUNDED, 5)
    assert ledger.get_balance(user) == 0


def test_another_intent_is_still_a_mismatch_and_changes_nothing(user):
    payment = events.make_payment(user)

    with pytest.raises(PaymentMismatch):
        fulfil(payment, intent_id="pi_someone_else")
    with pytest.raises(PaymentMismatch):
        fulfil(payment, amount=499)

    assert Payment.objects.get(pk=payment.pk).status == Payment.Status.PENDING
    assert not LedgerEntry.objects.filter(payment=payment).exists()


def test_an_intent_another_payment_holds_is_refused_and_changes_nothing(user):
    mine, theirs = events.make_payment(user), events.make_payment(user)
    Payment.objects.filter(pk=mine.pk).update(stripe_payment_intent_id=None)
    mine.refresh_from_db()

    with pytest.raises(IntegrityError):  # the unique intent id
        fulfil(mine, intent_id=theirs.stripe_payment_intent_id)

    assert Payment.objects.get(pk=mine.pk).status == Payment.Status.PENDING
    assert not LedgerEntry.objects.filter(payment=mine).exists()


def test_a_user_without_a_profile_is_credited_through_the_locking_path(user):
    payment = events.make_payment(user)
    Profile.objects.filter(user=user).delete()

    done = fulfil(payment)

    assert done.newly_credited
    assert Payment.objects.get(pk=payment.pk).status == Payment.Status.SUCCEEDED
    assert ledger.get_balance(user) == 5


def test_the_credit_changes_nothing_when_the_payment_is_no_longer_open(user):
    payment = events.make_payment(user)
    intent_id = payment.stripe_payment_intent_id
    fulfil(payment)
    credited = Payment.objects.get(pk=payment.pk)
    credited.status = Payment.Status.PENDING  # a stale copy: the database knows better

    done = ledger.credit_purchase(
        credited,
        intent_id=intent_id,
        open_statuses=fulfilment.OPEN,
        reason="again",
        idempotency_key=f"payment:{payment.pk}:again",
    )

    assert done is None
    assert LedgerEntry.objects.filter(payment=payment).count() == 1
    assert ledger.get_balance(user) == 5


# --- races (PostgreSQL: row locks across processes) --------------------------------------------

_barrier = None


def _fulfil_in_child(payment_id, in_transaction):
    from django.db import transaction

    _barrier.wait(timeout=30)
    payment = Payment.objects.select_related("pack", "user").get(pk=payment_id)
    if in_transaction:  # as the webhook's handler runs
        with transaction.atomic():
            return fulfil(payment).newly_credited
    return fulfil(payment).newly_credited


def _refund_in_child(payment_id):
    _barrier.wait(timeout=30)
    fulfilment.record_refund(Payment.objects.get(pk=payment_id), amount_refunded=500)
    return "refunded"


def _dispatch(target, args):
    return target(*args)


def _race(jobs):
    global _barrier
    _barrier = multiprocessing.get_context("fork").Barrier(len(jobs))
    return run_in_processes(_dispatch, jobs)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_paths_crediting_at_once_credit_once(user):
    payment = events.make_payment(user)

    results = _race([(_fulfil_in_child, (payment.pk, n % 2 == 0)) for n in range(8)])

    assert sorted(results) == [False] * 7 + [True]
    assert Payment.objects.get(pk=payment.pk).status == Payment.Status.SUCCEEDED
    assert LedgerEntry.objects.filter(payment=payment).count() == 1
    assert ledger.get_balance(user) == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_refund_recorded_while_the_payment_is_credited_is_clawed_back_either_way(user):
    for _ in range(3):
        payment = events.make_payment(user)

        _race([(_fulfil_in_child, (payment.pk, False)), (_refund_in_child, (payment.pk,))])

        stored = Payment.objects.get(pk=payment.pk)
        assert (stored.status, stored.amount_refunded, stored.credits_clawed_back) == ("refunded", 500, 5)
        assert LedgerEntry.objects.filter(payment=payment, kind=LedgerEntry.Kind.PURCHASE).count() == 1
        assert ledger.get_balance(user) == 0
