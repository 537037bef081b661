"""The sign-up bonus (BILLING_SIGNUP_GRANT): parsed and checked at start-up (billing.E014),
granted once per new user after the user's row commits, with any user model."""

from datetime import timedelta

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from billing import ledger
from billing.conf import MAX_SIGNUP_CREDITS, MAX_SIGNUP_DAYS, SignupGrant, signup_grant
from billing.models import MAX_CREDITS_PER_CHANGE, MAX_VALIDITY_DAYS, CreditGrant, LedgerEntry

pytestmark = pytest.mark.django_db


def test_the_limits_are_the_ledgers():
    assert MAX_SIGNUP_CREDITS == MAX_CREDITS_PER_CHANGE
    assert MAX_SIGNUP_DAYS == MAX_VALIDITY_DAYS


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (None, None),
        ("5", SignupGrant(5, None)),
        (5, SignupGrant(5, None)),
        (" 3/30d ", SignupGrant(3, 30)),
        ("3/30D", SignupGrant(3, 30)),
        ("1000000000/36500d", SignupGrant(1_000_000_000, 36_500)),
    ],
)
def test_good_values_parse(settings, value, parsed):
    settings.BILLING_SIGNUP_GRANT = value
    assert signup_grant() == parsed
    assert [e for e in checks.run_checks() if e.id == "billing.E014"] == []


@pytest.mark.parametrize(
    "value",
    ["", "0", "-3", "3/0d", "3/30", "3/30days", "3 / 30d", "three", "1.5", "3/30d/1", "٣", "1000000001", "5/36501d",
     "9" * 5000, True, 2.5, ["3", "30d"], {"credits": 3}],
)  # fmt: skip
def test_malformed_values_fail_at_start_up_naming_the_setting(settings, value):
    settings.BILLING_SIGNUP_GRANT = value
    with pytest.raises(ImproperlyConfigured, match="BILLING_SIGNUP_GRANT"):
        signup_grant()
    errors = [e for e in checks.run_checks() if e.id == "billing.E014"]
    assert len(errors) == 1 and "BILLING_SIGNUP_GRANT" in errors[0].msg


def test_off_by_default(make_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        user = make_user()
    assert ledger.get_balance(user) == 0
    assert not CreditGrant.objects.exists()


def test_a_new_user_gets_promotional_credits_valid_for_the_days(
    settings, make_user, django_capture_on_commit_callbacks
):
    settings.BILLING_SIGNUP_GRANT = "3/30d"
    with django_capture_on_commit_callbacks(execute=True):
        user = make_user()
    grant = CreditGrant.objects.get(profile__user=user)
    assert (grant.category, grant.amount, grant.source) == ("promotional", 3, "grant")
    assert abs(grant.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    assert grant.entry.idempotency_key == f"signup-grant:{user.pk}"
    assert grant.entry.kind == LedgerEntry.Kind.BONUS
    assert ledger.get_balance(user) == 3


def test_never_expiring_bonus_given_once_whatever_saves_follow(settings, make_user, django_capture_on_commit_callbacks):
    settings.BILLING_SIGNUP_GRANT = "5"
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        user = make_user()
        user.first_name = "Alice"
        user.save()
    for callback in callbacks:  # a retried callback (say, a second delivery) grants nothing more
        callback()
    assert CreditGrant.objects.get(profile__user=user).expires_at is None
    assert ledger.get_balance(user) == 5


def test_nothing_until_the_sign_up_commits(settings, make_user, django_capture_on_commit_callbacks):
    settings.BILLING_SIGNUP_GRANT = "5"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        user = make_user()
        assert ledger.get_balance(user) == 0
    assert len(callbacks) == 1


@pytest.mark.django_db(transaction=True)
def test_a_sign_up_that_rolls_back_gets_nothing(settings, make_user):
    settings.BILLING_SIGNUP_GRANT = "5"
    with pytest.raises(RuntimeError), transaction.atomic():
        make_user("gone@example.com")
        raise RuntimeError("the sign-up failed")
    assert not LedgerEntry.objects.exists()
    user = make_user("kept@example.com")  # autocommit: granted at once
    assert ledger.get_balance(user) == 5


def test_signing_up_through_the_site_gives_the_bonus(settings, client, django_capture_on_commit_callbacks):
    settings.BILLING_SIGNUP_GRANT = "2/7d"
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/accounts/signup/",
            {"email": "new@example.com", "password1": "a long pass phrase 42", "password2": "a long pass phrase 42"},
        )
    assert response.status_code == 302
    grant = CreditGrant.objects.get(profile__user__email="new@example.com")
    assert (grant.amount, grant.category) == (2, "promotional")


def test_a_refused_bonus_is_logged_and_does_not_fail_the_sign_up(
    settings, make_user, caplog, monkeypatch, django_capture_on_commit_callbacks
):
    settings.BILLING_SIGNUP_GRANT = "5"

    def refuse(*args, **kwargs):
        raise ValueError("the ledger refused")

    monkeypatch.setattr("billing.receivers.grant_credits", refuse)
    with caplog.at_level("ERROR", logger="billing.receivers"), django_capture_on_commit_callbacks(execute=True):
        user = make_user()
    assert user.pk is not None and ledger.get_balance(user) == 0
    assert f"sign-up bonus of user {user.pk} could not be granted" in caplog.text
