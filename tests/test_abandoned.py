"""Payments left in 3-D Secure are canceled at Stripe after BILLING_ABANDONED_AFTER (the periodic
job cancel_abandoned_payments), against the live localstripe; one finished at the last moment is
credited instead; a second run changes nothing."""

from datetime import timedelta

import pytest

from billing import abandoned, ledger, periodic, stripe_gateway
from billing.models import Payment
from tests.stripe_helpers import complete_3ds
from tests.test_charge import start_3ds

pytestmark = pytest.mark.django_db


def age(payment, seconds):
    Payment.objects.filter(pk=payment.pk).update(created_at=payment.created_at - timedelta(seconds=seconds))


def test_a_payment_left_in_3ds_is_canceled_at_stripe_once_the_limit_passes(
    localstripe, signed_in_client, user, settings
):
    settings.BILLING_ABANDONED_AFTER = 600
    payment, _secret = start_3ds(signed_in_client, user)
    assert abandoned.cancel_abandoned() == {"canceled": 0, "credited": 0, "errors": 0}  # not old enough
    age(payment, 601)
    assert abandoned.cancel_abandoned()["canceled"] == 1
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED
    assert payment.failure_message == str(abandoned.ABANDONED_MESSAGE)
    assert stripe_gateway.retrieve_payment_intent(payment.stripe_payment_intent_id).status == "canceled"
    assert abandoned.cancel_abandoned() == {"canceled": 0, "credited": 0, "errors": 0}  # nothing left to do
    assert ledger.get_balance(user) == 0


def test_a_payment_finished_at_the_last_moment_is_credited_not_canceled(localstripe, signed_in_client, user, settings):
    settings.BILLING_ABANDONED_AFTER = 600
    payment, secret = start_3ds(signed_in_client, user)
    complete_3ds(localstripe, payment.stripe_payment_intent_id, secret, success=True)  # no confirm call from the page
    age(payment, 601)
    assert abandoned.cancel_abandoned()["credited"] == 1
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED and ledger.get_balance(user) == 5


def test_the_periodic_job_includes_it():
    assert "cancel_abandoned_payments" in {job.name for job in periodic.PERIODIC}


@pytest.mark.parametrize("value", [0, 299, "soon", 1.5])
def test_a_limit_that_would_cancel_customers_still_at_their_bank_stops_start_up(settings, value):
    from billing.checks import check_numbers

    settings.BILLING_ABANDONED_AFTER = value
    assert [error.id for error in check_numbers() if "BILLING_ABANDONED_AFTER" in error.msg] == ["billing.E008"]
