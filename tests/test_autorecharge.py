"""Auto-recharge (billing.autorecharge) against the live localstripe, with the suite's immediate
task backend (a task runs where it is enqueued): the settings and their consent wording, the
database's two rules (one recharge in flight, the monthly limit), a spend below the threshold
followed by one recharge, the monthly limit, pausing after failures with the email and the
signal, a card the bank wants to authenticate, and a lost answer settled once by reconcile."""

from __future__ import annotations

from datetime import date, timedelta
from http import HTTPStatus

import pytest
from django.core import mail
from django.db import IntegrityError, transaction

from billing import autorecharge, cards, ledger, signals, stripe_gateway
from billing.exceptions import InvalidAutoRecharge, StripeUnavailable
from billing.models import AutoRecharge, AutoRechargeAttempt, CreditPack, Payment
from billing.tasks import reconcile_payments_task
from tests import stripe_events as events
from tests.stripe_helpers import DECLINED, VISA, card, post_json

pytestmark = pytest.mark.django_db

NEEDS_AUTHENTICATION = "4000002760003184"  # off-session: requires_action (the bank wants the customer)
AUTO = Payment.Purpose.AUTO_RECHARGE


@pytest.fixture(autouse=True)
def _fresh_armed_users():
    autorecharge.forget_armed()
    yield
    autorecharge.forget_armed()


@pytest.fixture
def no_retry_wait(monkeypatch):
    monkeypatch.setattr(autorecharge, "RETRY_AFTER", timedelta(0))


def with_card(user, number=VISA):
    cards.save_card(user, card(number))
    return user


def turn_on(user, *, threshold=3, monthly_limit=5, pack="starter"):
    return autorecharge.configure(user, enabled=True, pack=pack, threshold=threshold, monthly_limit=monthly_limit)


def spend(user, amount, capture):
    """A spend whose commit runs its on-commit work (the enqueue) as outside a test transaction."""
    with capture(execute=True):
        ledger.spend_credits(user, amount, reason="api call")


def recharges(user):
    return Payment.objects.filter(user=user, purpose=AUTO)


# --- settings ----------------------------------------------------------------------------------


def test_configure_records_the_consent_wording_from_the_real_values(localstripe, user):
    with_card(user)
    setting = turn_on(user, threshold=3, monthly_limit=2)
    assert setting.enabled and setting.consented_at is not None
    assert setting.consent_text == (
        "When your balance falls below 3, charge your Visa ending 4242 $5.00 for 5 credits, at most 2 times a month."
    )
    off = autorecharge.configure(user, enabled=False, pack="starter", threshold=3, monthly_limit=2)
    assert not off.enabled and AutoRecharge.objects.count() == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threshold": -1}, "threshold must be a whole number"),
        ({"threshold": "3"}, "threshold must be a whole number"),
        ({"monthly_limit": 0}, "from 1 to 31 recharges"),
        ({"monthly_limit": 32}, "from 1 to 31 recharges"),
        ({"pack": "nope"}, "not for sale"),
    ],
)
def test_configure_refuses_values_out_of_range(localstripe, user, changes, message):
    with_card(user)
    values = {"enabled": True, "pack": "starter", "threshold": 3, "monthly_limit": 5} | changes
    with pytest.raises(InvalidAutoRecharge) as refused:
        autorecharge.configure(user, **values)
    assert message in refused.value.user_message
    assert not AutoRecharge.objects.exists()


def test_enabling_needs_a_saved_card(user):
    with pytest.raises(InvalidAutoRecharge, match="no saved card") as refused:
        turn_on(user)
    assert "Save a card" in refused.value.user_message
    assert not autorecharge.configure(user, enabled=False, pack="starter", threshold=3, monthly_limit=5).enabled


# --- the database's rules ------------------------------------------------------------------------


def test_the_database_allows_one_auto_recharge_in_flight_per_user(user):
    pack = CreditPack.objects.get(slug="starter")
    fields = {"user": user, "pack": pack, "credits": 5, "amount": 500, "currency": "usd", "purpose": AUTO}
    first = Payment.objects.create(**fields)
    Payment.objects.create(**(fields | {"purpose": Payment.Purpose.PURCHASE}))  # purchases are not limited
    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.create(**fields)
    Payment.objects.filter(pk=first.pk).update(status=Payment.Status.SUCCEEDED)
    Payment.objects.create(**fields)  # the first one settled: the slot is free


def test_the_database_keeps_the_monthly_limit(user):
    pack = CreditPack.objects.get(slug="starter")
    fields = {"user": user, "pack": pack, "credits": 5, "amount": 500, "currency": "usd"}
    month = date(2026, 12, 1)

    def attempt(number, limit=2):
        payment = Payment.objects.create(**fields)
        AutoRechargeAttempt.objects.create(
            profile=user.profile, month=month, number=number, monthly_limit=limit, payment=payment
        )

    attempt(1)
    attempt(2)
    for number in (2, 3):  # the same number again, or one above the limit
        with pytest.raises(IntegrityError), transaction.atomic():
            attempt(number)


# --- the recharge ------------------------------------------------------------------------------


def test_a_spend_below_the_threshold_is_followed_by_exactly_one_recharge(
    localstripe, user, django_capture_on_commit_callbacks
):
    with_card(user)
    ledger.adjust_credits(user, 6, reason="top-up", actor=None)
    turn_on(user, threshold=3)
    spend(user, 2, django_capture_on_commit_callbacks)  # 4: not below 3
    assert not recharges(user).exists()
    spend(user, 2, django_capture_on_commit_callbacks)  # 2: below 3, recharged by 5
    [payment] = recharges(user)
    assert payment.status == Payment.Status.SUCCEEDED and payment.credits == 5
    assert ledger.get_balance(user) == 7
    # The customer's history says the purchase was automatic.
    assert payment.ledger_entries.get().reason == "Auto-recharge: bought Starter (5 credits)"
    spend(user, 1, django_capture_on_commit_callbacks)  # 6: not below 3
    assert recharges(user).count() == 1
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.NOT_NEEDED
    intent = stripe_gateway.retrieve_payment_intent(payment.stripe_payment_intent_id)
    assert intent.status == "succeeded"


def test_nothing_happens_for_users_without_auto_recharge_or_with_it_off(
    localstripe, user, django_capture_on_commit_callbacks
):
    with_card(user)
    ledger.adjust_credits(user, 2, reason="top-up", actor=None)
    spend(user, 1, django_capture_on_commit_callbacks)
    autorecharge.configure(user, enabled=False, pack="starter", threshold=3, monthly_limit=5)
    spend(user, 1, django_capture_on_commit_callbacks)
    assert not recharges(user).exists()
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.OFF


def test_the_monthly_limit(localstripe, user):
    with_card(user)
    turn_on(user, threshold=100, monthly_limit=2)
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.SUCCEEDED
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.SUCCEEDED
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.MONTHLY_LIMIT
    assert recharges(user).count() == 2 and ledger.get_balance(user) == 10
    assert list(AutoRechargeAttempt.objects.values_list("number", flat=True).order_by("number")) == [1, 2]


def test_a_declining_card_pauses_after_three_failures_and_emails_the_user(
    localstripe, user, no_retry_wait, django_capture_on_commit_callbacks
):
    with_card(user, DECLINED)
    turn_on(user)
    told = []
    signals.auto_recharge_failed.connect(lambda **kwargs: told.append(kwargs), weak=False, dispatch_uid="t")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            outcomes = [autorecharge.recharge(user.pk) for _ in range(4)]
    finally:
        signals.auto_recharge_failed.disconnect(dispatch_uid="t")
    assert outcomes == ["failed", "failed", "failed", "paused"]
    setting = AutoRecharge.objects.get(profile__user=user)
    assert setting.paused_at is not None and setting.consecutive_failures == 3
    assert "declined" in setting.paused_reason
    assert recharges(user).filter(status=Payment.Status.FAILED).count() == 3
    [event] = told
    assert event["user"] == user and event["payment"].status == Payment.Status.FAILED and "declined" in event["reason"]
    [email] = mail.outbox
    assert email.to == [user.email] and "paused" in email.subject
    assert "/billing/#auto-recharge" in email.body
    # Turning it on again (after fixing the card) lifts the pause.
    assert turn_on(user).paused_at is None


def test_a_failure_waits_before_the_next_try(localstripe, user):
    with_card(user, DECLINED)
    turn_on(user)
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.FAILED
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.WAITING
    assert recharges(user).count() == 1


def test_a_card_that_needs_authentication_off_session_pauses_with_the_fix_it_link(
    localstripe, user, no_retry_wait, django_capture_on_commit_callbacks, settings
):
    settings.BILLING_SITE_URL = "https://credits.example.com/"
    with_card(user, NEEDS_AUTHENTICATION)
    turn_on(user)
    with django_capture_on_commit_callbacks(execute=True):
        outcomes = [autorecharge.recharge(user.pk) for _ in range(3)]
    assert outcomes == ["failed"] * 3
    assert set(recharges(user).values_list("status", flat=True)) == {Payment.Status.FAILED}
    for payment in recharges(user):  # nobody can authenticate them now: cancelled at Stripe
        assert stripe_gateway.retrieve_payment_intent(payment.stripe_payment_intent_id).status == "canceled"
    setting = AutoRecharge.objects.get(profile__user=user)
    assert setting.paused_at is not None and "bank asked to confirm" in setting.paused_reason
    [email] = mail.outbox
    assert "https://credits.example.com/billing/#auto-recharge" in email.body
    assert ledger.get_balance(user) == 0


def test_a_success_resets_the_failures(localstripe, user, no_retry_wait):
    with_card(user, DECLINED)
    turn_on(user)
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.FAILED
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.FAILED
    with_card(user, VISA)
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.SUCCEEDED
    assert AutoRecharge.objects.get(profile__user=user).consecutive_failures == 0


def test_a_lost_answer_is_settled_by_reconcile_and_never_charged_twice(
    localstripe, user, monkeypatch, django_capture_on_commit_callbacks
):
    with_card(user)
    turn_on(user, threshold=3)
    create = stripe_gateway.create_payment_intent

    def answer_lost(**kwargs):
        create(**kwargs)  # Stripe charged the card...
        raise StripeUnavailable("connection reset")  # ...and the answer never came back

    monkeypatch.setattr(stripe_gateway, "create_payment_intent", answer_lost)
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.PENDING
    [payment] = recharges(user)
    assert payment.status == Payment.Status.PENDING
    # Further debits meanwhile find the recharge in flight: nothing is charged again.
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.IN_FLIGHT
    monkeypatch.setattr(stripe_gateway, "create_payment_intent", create)
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.IN_FLIGHT

    with django_capture_on_commit_callbacks(execute=True):
        reconcile_payments_task.enqueue()
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    assert ledger.get_balance(user) == 5
    intents = stripe_gateway.find_payment_intents(metadata_key="payment_ref", metadata_value=payment.reference)
    assert len(intents) == 1
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.NOT_NEEDED
    assert recharges(user).count() == 1


# --- the page and its endpoint -------------------------------------------------------------------

SETTINGS_URL = "/billing/auto-recharge/"


def test_the_endpoint_saves_the_settings_and_answers_the_consent(localstripe, user, signed_in_client):
    with_card(user)
    page = signed_in_client.get("/billing/")
    assert b'id="auto-recharge"' in page.content and b"Off." in page.content
    answer = post_json(
        signed_in_client, SETTINGS_URL, {"enabled": True, "pack": "starter", "threshold": 3, "monthly_limit": 2}
    )
    assert answer.status_code == HTTPStatus.OK, answer.content
    assert answer.json()["consent"].startswith("When your balance falls below 3, charge your Visa ending 4242 $5.00")
    page = signed_in_client.get("/billing/")
    assert "On.</strong> When your balance falls below 3" in page.content.decode()
    off = post_json(
        signed_in_client, SETTINGS_URL, {"enabled": False, "pack": "starter", "threshold": 3, "monthly_limit": 2}
    )
    assert off.json()["enabled"] is False


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"pack": "starter", "threshold": 3, "monthly_limit": 2}, "Say whether auto-recharge is on."),
        ({"enabled": True, "pack": "starter", "threshold": -3, "monthly_limit": 2}, "threshold must be"),
        ({"enabled": True, "pack": "starter", "threshold": 3, "monthly_limit": 99}, "from 1 to 31"),
    ],
)
def test_the_endpoint_answers_clear_errors(localstripe, user, signed_in_client, body, error):
    with_card(user)
    answer = post_json(signed_in_client, SETTINGS_URL, body)
    assert answer.status_code == HTTPStatus.BAD_REQUEST
    assert error in answer.json()["error"]


def test_the_page_shows_a_pause_and_why(localstripe, user, signed_in_client, no_retry_wait):
    with_card(user, DECLINED)
    turn_on(user)
    for _ in range(3):
        autorecharge.recharge(user.pk)
    page = signed_in_client.get("/billing/").content.decode()
    assert 'data-testid="auto-recharge-paused"' in page and "declined" in page


def test_a_lost_answer_is_settled_by_the_webhook_once_and_resets_the_failures(
    localstripe, user, monkeypatch, client, django_capture_on_commit_callbacks
):
    with_card(user)
    turn_on(user, threshold=3)
    AutoRecharge.objects.filter(profile__user=user).update(consecutive_failures=2)
    create = stripe_gateway.create_payment_intent

    def answer_lost(**kwargs):
        create(**kwargs)
        raise StripeUnavailable("read timeout")

    monkeypatch.setattr(stripe_gateway, "create_payment_intent", answer_lost)
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.PENDING
    [payment] = recharges(user)
    [intent] = stripe_gateway.find_payment_intents(metadata_key="payment_ref", metadata_value=payment.reference)
    payment.stripe_payment_intent_id = intent.id  # what Stripe's event names; our row never learnt it
    event = events.intent_succeeded(payment)
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):  # Stripe may deliver it twice
            assert events.post(client, event).status_code == HTTPStatus.OK
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED and payment.stripe_payment_intent_id == intent.id
    assert ledger.get_balance(user) == 5
    assert AutoRecharge.objects.get(profile__user=user).consecutive_failures == 0
    assert autorecharge.recharge(user.pk) == autorecharge.Outcome.NOT_NEEDED


def test_a_removed_card_pauses_at_once(localstripe, user, django_capture_on_commit_callbacks):
    with_card(user)
    turn_on(user)
    cards.remove_card(cards.saved_card(user))
    with django_capture_on_commit_callbacks(execute=True):
        assert autorecharge.recharge(user.pk) == autorecharge.Outcome.FAILED
    setting = AutoRecharge.objects.get(profile__user=user)
    assert setting.paused_at is not None and "no saved card" in setting.paused_reason
    assert recharges(user).get().status == Payment.Status.FAILED
    assert len(mail.outbox) == 1
