"""billing.signals: each sent once, only after the transaction that recorded it commits, never
on rollback, with the documented arguments (docs/INSTALL.md, "Signals")."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from billing import fulfilment, ledger, signals
from billing.models import CreditGrant, Profile
from tests import stripe_events as events


@pytest.fixture
def received():
    calls = []

    def make(signal):
        def receiver(sender, **kwargs):
            calls.append((signal, kwargs))

        signal.connect(receiver, weak=False, dispatch_uid=f"test-{id(signal)}")
        return receiver

    hooked = [
        signals.credits_purchased,
        signals.payment_refunded,
        signals.payment_disputed,
        signals.clawback_shortfall,
        signals.credits_expired,
    ]
    for signal in hooked:
        make(signal)
    yield calls
    for signal in hooked:
        signal.disconnect(dispatch_uid=f"test-{id(signal)}")


def fulfil(payment):
    return fulfilment.fulfil_payment(
        payment,
        intent_id=payment.stripe_payment_intent_id,
        amount=payment.amount,
        currency=payment.currency,
        source="test",
    )


@pytest.mark.django_db(transaction=True)
def test_credits_purchased_is_sent_once_and_only_after_commit(user, received):
    payment = events.make_payment(user)
    with transaction.atomic():
        result = fulfil(payment)
        assert received == []  # not while the transaction is open
    assert len(received) == 1
    signal, kwargs = received[0]
    assert signal is signals.credits_purchased
    assert kwargs["payment"].pk == payment.pk and kwargs["user"] == user
    assert kwargs["credits"] == 5 and kwargs["entry"].pk == result.entry.pk
    fulfil(payment)  # the webhook after the charge: already credited
    assert len(received) == 1


@pytest.mark.django_db(transaction=True)
def test_nothing_is_sent_when_the_transaction_rolls_back(user, received):
    payment = events.make_payment(user)
    with pytest.raises(RuntimeError), transaction.atomic():
        fulfil(payment)
        raise RuntimeError("the caller's work failed")
    assert received == []
    assert ledger.get_balance(user) == 0


def test_refund_and_shortfall(user, received, django_capture_on_commit_callbacks):
    payment = events.make_payment(user)
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(payment)
    ledger.spend_credits(user, 4, reason="spent before the refund")
    received.clear()
    with django_capture_on_commit_callbacks(execute=True):
        fulfilment.record_refund(payment, amount_refunded=500)
    by_signal = {signal: kwargs for signal, kwargs in received}
    assert len(received) == 2
    refunded = by_signal[signals.payment_refunded]
    assert refunded["amount_refunded"] == 500 and refunded["amount"] == 500 and refunded["credits_clawed_back"] == 1
    shortfall = by_signal[signals.clawback_shortfall]
    assert shortfall["shortfall"] == 4 and shortfall["credits_unrecovered"] == 4
    received.clear()
    with django_capture_on_commit_callbacks(execute=True):
        fulfilment.record_refund(payment, amount_refunded=500)  # the same refund again
    assert received == []


def test_payment_disputed(user, received, django_capture_on_commit_callbacks):
    payment = events.make_payment(user)
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(payment)
    received.clear()
    with django_capture_on_commit_callbacks(execute=True):
        fulfilment.record_dispute(payment, amount_disputed=500)
    assert [(s, k["amount_disputed"]) for s, k in received] == [(signals.payment_disputed, 500)]


def test_a_failing_receiver_does_not_break_the_payment(user, django_capture_on_commit_callbacks, caplog):
    def broken(sender, **kwargs):
        raise ValueError("receiver bug")

    signals.credits_purchased.connect(broken, weak=False, dispatch_uid="broken")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            fulfil(events.make_payment(user))
    finally:
        signals.credits_purchased.disconnect(dispatch_uid="broken")
    assert ledger.get_balance(user) == 5
    assert "receiver bug" in caplog.text


def test_credits_expired_is_sent_per_expired_grant_after_commit(user, received, django_capture_on_commit_callbacks):
    soon = timezone.now() + timedelta(days=1)
    first = ledger.grant_credits(user, 3, reason="welcome", expires_at=soon)
    second = ledger.grant_credits(user, 2, reason="contest", expires_at=soon, category="paid")
    ledger.adjust_credits(user, 4, reason="paid", actor=None)
    past = timezone.now() - timedelta(seconds=1)  # the clock cannot be moved, so the expiry is
    CreditGrant.objects.filter(entry__in=[first, second]).update(expires_at=past)
    Profile.objects.filter(user=user).update(next_expiry=past)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert ledger.expire_credits() == 5
    assert received == []  # not before the commit
    for callback in callbacks:
        callback()
    sent = sorted(((kwargs["credits"], kwargs["grant"].entry_id) for _, kwargs in received), reverse=True)
    assert sent == [(3, first.pk), (2, second.pk)]
    for signal, kwargs in received:
        assert signal is signals.credits_expired
        assert kwargs["user"] == user
        assert kwargs["entry"].kind == "expiry" and kwargs["entry"].delta == -kwargs["credits"]
    with django_capture_on_commit_callbacks(execute=True):
        assert ledger.expire_credits() == 0
    assert len(received) == 2


def test_the_later_features_signal_is_declared():
    assert isinstance(signals.auto_recharge_failed, signals.Signal)
