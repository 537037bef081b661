"""The grant commands through call_command: grant_credits, expire_credits, and show_credits's
open grants. Each bad input fails with a clear message and changes nothing."""

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from billing import ledger
from billing.models import CreditGrant, LedgerEntry, Profile
from tests import fuzzing

pytestmark = pytest.mark.django_db


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def let_expire(grant):
    """As if the grant's expiry had passed: the clock cannot be moved, so its expiry is."""
    past = timezone.now() - timedelta(seconds=1)
    CreditGrant.objects.filter(pk=grant.pk).update(expires_at=past)
    Profile.objects.filter(pk=grant.profile_id).update(next_expiry=past)


# --- grant_credits -----------------------------------------------------------------------------


def test_grant_credits_promotional_by_default_never_expiring(user):
    out = run("grant_credits", "ALICE@example.com", "5", "--reason", "welcome")
    grant = CreditGrant.objects.get(profile__user=user)
    assert (grant.category, grant.amount, grant.expires_at, grant.entry.reason) == ("promotional", 5, None, "welcome")
    assert grant.entry.kind == LedgerEntry.Kind.BONUS
    assert "alice@example.com: +5 promotional credits, never expiring; balance now 5" in out
    assert ledger.get_balance(user) == 5


def test_grant_credits_paid_expiring_in_days(user):
    out = run(
        "grant_credits",
        "alice@example.com",
        " 7 ",
        "--reason",
        "apology",
        "--category",
        "Paid",
        "--expires-in-days",
        "30",
    )
    grant = CreditGrant.objects.get(profile__user=user)
    assert grant.category == "paid"
    assert abs(grant.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    assert "+7 paid credits, expiring " in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody@example.com", "5", "--reason", "x"], "no user with email"),
        (["alice@example.com", "0", "--reason", "x"], "N must be a whole number from 1 to 1,000,000,000"),
        (["alice@example.com", "-5", "--reason", "x"], "N must be a whole number from 1"),
        (["alice@example.com", "five", "--reason", "x"], "N must be a whole number from 1"),
        (["alice@example.com", str(10**10), "--reason", "x"], "N must be a whole number from 1"),
        (["alice@example.com", "5", "--reason", "  "], "--reason must not be blank"),
        (["alice@example.com", "5", "--reason", "a" * 300], "--reason must be at most 255 characters"),
        (["alice@example.com", "5", "--reason", "nul\x00"], "NUL"),
        (
            ["alice@example.com", "5", "--reason", "x", "--category", "gold"],
            "--category must be one of paid, promotional",
        ),
        (["alice@example.com", "5", "--reason", "x", "--expires-in-days", "0"], "--expires-in-days must be a whole"),
        (["alice@example.com", "5", "--reason", "x", "--expires-in-days", "-1"], "--expires-in-days must be a whole"),
        (["alice@example.com", "5", "--reason", "x", "--expires-in-days", "1.5"], "--expires-in-days must be a whole"),
        (["alice@example.com", "5", "--reason", "x", "--expires-in-days", "9" * 20], "--expires-in-days must be"),
    ],
)
def test_grant_credits_bad_input(user, args, message):
    before = fuzzing.money_state()
    with pytest.raises(CommandError, match=message):
        run("grant_credits", *args)
    assert fuzzing.money_state() == before
    assert not CreditGrant.objects.exists()


def test_grant_credits_requires_a_reason(user):
    with pytest.raises(CommandError, match="--reason"):
        run("grant_credits", "alice@example.com", "5")


# --- expire_credits ----------------------------------------------------------------------------


def test_expire_credits_prints_what_expired_and_a_second_run_finds_nothing(user, other_user):
    ledger.grant_credits(user, 3, reason="welcome", expires_at=timezone.now() + timedelta(days=1))
    ledger.grant_credits(other_user, 1, reason="welcome", expires_at=timezone.now() + timedelta(days=1))
    ledger.adjust_credits(user, 2, reason="paid", actor=None)
    for grant in CreditGrant.objects.filter(category="promotional"):
        let_expire(grant)
    assert run("expire_credits").strip() == "4 credits expired."
    assert run("expire_credits").strip() == "0 credits expired."
    assert ledger.get_balance(user) == 2 and ledger.get_balance(other_user) == 0
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.EXPIRY).count() == 2
    assert run("audit_credits").startswith("OK")


def test_expire_credits_with_nothing_due(user):
    ledger.grant_credits(user, 1, reason="welcome", expires_at=timezone.now() + timedelta(days=1))
    assert run("expire_credits").strip() == "0 credits expired."
    assert ledger.get_balance(user) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_expire_runs_at_once_expire_each_grant_once(make_user):
    users = [make_user() for _ in range(6)]
    for user in users:
        ledger.grant_credits(user, 2, reason="welcome", expires_at=timezone.now() + timedelta(days=1))
    for grant in CreditGrant.objects.all():
        let_expire(grant)
    outputs, barrier = [], threading.Barrier(2)

    def one_run():
        try:
            barrier.wait()
            outputs.append(run("expire_credits"))
        finally:
            connection.close()

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(int(out.split()[0]) for out in outputs) == 12
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.EXPIRY).count() == 6
    assert run("audit_credits").startswith("OK")


# --- show_credits: open grants -----------------------------------------------------------------


def test_show_credits_lists_open_grants_in_spending_order(user):
    soon = timezone.now() + timedelta(days=3)
    ledger.adjust_credits(user, 10, reason="paid", actor=None)
    ledger.grant_credits(user, 3, reason="welcome", expires_at=soon)
    ledger.spend_credits(user, 1, reason="one")
    used = ledger.grant_credits(user, 1, reason="used up", expires_at=soon + timedelta(days=1))
    ledger.spend_credits(user, 3, reason="three")  # empties the welcome grant (2 left) then 1 more
    assert CreditGrant.objects.get(entry=used).remaining == 0
    out = run("show_credits", "alice@example.com")
    lines = out.splitlines()
    start = lines.index("Open credit grants, in the order they are spent:")
    rows = lines[start + 2 :]
    assert len(rows) == 1 and "paid" in rows[0] and "10/10" in rows[0] and rows[0].endswith("never")


def test_show_credits_marks_a_cut_off_grant_list(user):
    for n in range(3):
        ledger.grant_credits(user, 1, reason=f"g{n}", expires_at=timezone.now() + timedelta(days=n + 1))
    out = run("show_credits", "alice@example.com", "--limit", "2")
    assert "Open credit grants, in the order they are spent (first 2):" in out
    lines = out.splitlines()
    start = lines.index("Open credit grants, in the order they are spent (first 2):")
    assert len(lines[start + 2 :]) == 2
    assert "promotional" in lines[start + 2] and "1/1" in lines[start + 2]
