"""The staff commands: adjust_credits, show_credits, audit_credits. Each bad input fails with a
clear message and leaves every balance and the ledger exactly as they were."""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from billing.ledger import add_credits, get_balance, spend_credits
from billing.models import LedgerEntry, Profile
from tests.conftest import corrupt_balance, insert_raw_entry

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


def run(*args, **options):
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue()


def state():
    """Every balance and every ledger row, to compare before and after a refused command."""
    return (
        sorted(Profile.objects.values_list("user__email", "credits")),
        list(LedgerEntry.objects.order_by("id").values_list("id", "delta", "balance_after")),
    )


@pytest.fixture
def staff(make_user):
    return make_user("ops@example.com", is_staff=True)


# --- adjust_credits ----------------------------------------------------------------------------


def test_adjust_adds_credits_with_reason_and_actor(user, staff):
    out = run("adjust_credits", "ALICE@Example.com", "5", "--reason", "goodwill", "--actor", "OPS@example.com")

    assert get_balance(user) == 5
    entry = LedgerEntry.objects.get()
    assert (entry.delta, entry.kind, entry.reason, entry.actor, entry.balance_after) == (
        5,
        LedgerEntry.Kind.ADJUSTMENT,
        "goodwill",
        staff,
        5,
    )
    assert "alice@example.com: +5 credits, balance now 5" in out


def test_adjust_accepts_a_negative_delta_on_the_command_line(user):
    add_credits(user, 10, kind=LedgerEntry.Kind.BONUS, reason="start")

    out = run("adjust_credits", "alice@example.com", "-3", "--reason", "double grant")

    assert get_balance(user) == 7
    assert LedgerEntry.objects.first().delta == -3
    assert LedgerEntry.objects.first().actor is None
    assert "-3 credits, balance now 7" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody@example.com", "5", "--reason", "x"], "no user with email 'nobody@example.com'"),
        (["alice@example.com", "0", "--reason", "x"], "DELTA must not be zero"),
        (["alice@example.com", "abc", "--reason", "x"], "DELTA must be a whole number of credits, got 'abc'"),
        (["alice@example.com", "2.5", "--reason", "x"], "DELTA must be a whole number of credits, got '2.5'"),
        (["alice@example.com", "5", "--reason", "   "], "--reason must not be blank"),
        (["alice@example.com", "5", "--reason", "x", "--actor", "ghost@example.com"], "no user with email"),
        (["alice@example.com", "5", "--reason", "x", "--actor", "bob@example.com"], "is not a staff user"),
        (["alice@example.com", "-4", "--reason", "x"], "has 3 credits; removing 4 would take the balance below zero"),
    ],
)
def test_adjust_bad_input_fails_clearly_and_changes_nothing(user, other_user, args, message):
    add_credits(user, 3, kind=LedgerEntry.Kind.BONUS, reason="start")
    before = state()

    with pytest.raises(CommandError, match=message):
        run("adjust_credits", *args)

    assert state() == before


def test_adjust_without_reason_is_refused_by_the_parser(user):
    before = state()
    with pytest.raises(CommandError, match="the following arguments are required: --reason"):
        run("adjust_credits", "alice@example.com", "5")
    assert state() == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_commands_from_the_shell_exit_codes_and_stderr(user):
    """As an operator runs them: `manage.py ...` in its own process against the same database."""
    add_credits(user, 2, kind=LedgerEntry.Kind.BONUS, reason="start")
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
    }

    def manage(*args):
        return subprocess.run(
            [sys.executable, "manage.py", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    refused = manage("adjust_credits", "alice@example.com", "-3", "--reason", "too much")
    assert refused.returncode == 1
    assert "has 2 credits; removing 3 would take the balance below zero" in refused.stderr
    assert get_balance(user) == 2

    audit = manage("audit_credits")
    assert audit.returncode == 0, audit.stderr
    assert audit.stdout.startswith("OK:")

    corrupt_balance(user, 9)
    audit = manage("audit_credits")
    assert audit.returncode == 1
    assert "alice@example.com" in audit.stdout and "1 profile broken" in audit.stderr


# --- show_credits ------------------------------------------------------------------------------


def test_show_credits_lists_balance_and_newest_entries(user, staff):
    add_credits(user, 10, kind=LedgerEntry.Kind.BONUS, reason="welcome", actor=staff)
    spend_credits(user, 1, reason="fortune one")
    spend_credits(user, 1, reason="fortune two")

    out = run("show_credits", "Alice@Example.COM", "--limit", "2")

    lines = out.splitlines()
    assert lines[0] == "alice@example.com: 8 credits"
    assert "Newest 2 ledger entries:" in out
    assert "fortune two" in lines[3] and "fortune one" in lines[4]  # newest first
    assert "welcome" not in out  # beyond the limit


def test_show_credits_default_shows_actor(user, staff):
    add_credits(user, 10, kind=LedgerEntry.Kind.BONUS, reason="welcome", actor=staff)
    out = run("show_credits", "alice@example.com")
    assert "welcome [by ops@example.com]" in out


def test_show_credits_without_entries(user):
    out = run("show_credits", "alice@example.com")
    assert out.splitlines() == ["alice@example.com: 0 credits", "No ledger entries."]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody@example.com"], "no user with email"),
        (["alice@example.com", "--limit", "0"], "--limit must be a whole number from 1 to 10,000"),
        (["alice@example.com", "--limit", "ten"], "--limit must be a whole number from 1 to 10,000"),
        (["alice@example.com", "--limit", "-5"], "--limit must be a whole number from 1 to 10,000"),
    ],
)
def test_show_credits_bad_input(user, args, message):
    with pytest.raises(CommandError, match=message):
        run("show_credits", *args)


# --- audit_credits -----------------------------------------------------------------------------


def test_audit_ok_when_every_balance_matches(user, other_user, make_user):
    make_user()  # a profile without entries and 0 credits is fine
    add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="start")
    spend_credits(user, 2, reason="spend")
    add_credits(other_user, 1, kind=LedgerEntry.Kind.BONUS, reason="start")

    out = run("audit_credits")

    assert out.startswith("OK: 3 profiles checked")


def test_audit_catches_balance_corrupted_with_raw_sql(user, other_user):
    add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="start")
    add_credits(other_user, 2, kind=LedgerEntry.Kind.BONUS, reason="start")
    corrupt_balance(user, 50)

    out = StringIO()
    with pytest.raises(CommandError, match="1 profile broken"):
        call_command("audit_credits", stdout=out)

    assert f"alice@example.com (profile {user.profile.pk}): credits=50 ledger_sum=5 last_balance_after=5" in (
        out.getvalue()
    )
    assert "bob@example.com" not in out.getvalue()


def test_audit_catches_credits_on_a_profile_without_entries(user):
    corrupt_balance(user, 3)
    out = StringIO()
    with pytest.raises(CommandError, match="1 profile broken"):
        call_command("audit_credits", stdout=out)
    assert "alice@example.com" in out.getvalue()
    assert "credits=3 ledger_sum=0 last_balance_after=no entries" in out.getvalue()


def test_audit_catches_newest_balance_after_wrong_though_sum_matches(user, other_user):
    """credits == sum(delta), but the newest entry claims another balance."""
    add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="start")
    insert_raw_entry(user, delta=2, balance_after=99)
    corrupt_balance(user, 7)
    add_credits(other_user, 1, kind=LedgerEntry.Kind.BONUS, reason="start")

    out = StringIO()
    with pytest.raises(CommandError, match="1 profile broken"):
        call_command("audit_credits", stdout=out)
    assert "alice@example.com" in out.getvalue()
    assert "credits=7 ledger_sum=7 last_balance_after=99" in out.getvalue()


def test_audit_catches_entry_missing_from_balance(user, other_user):
    """A ledger row written without its balance change (sum and newest balance_after both off)."""
    add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="start")
    insert_raw_entry(user, delta=4, balance_after=9)
    corrupt_balance(other_user, 1)

    out = StringIO()
    with pytest.raises(CommandError, match="2 profiles broken"):
        call_command("audit_credits", stdout=out)
    assert "alice@example.com" in out.getvalue() and "credits=5 ledger_sum=9 last_balance_after=9" in out.getvalue()
    assert "bob@example.com" in out.getvalue()


def test_audit_uses_a_fixed_number_of_queries(user, make_user, django_assert_max_num_queries):
    for _ in range(20):
        someone = make_user()
        add_credits(someone, 2, kind=LedgerEntry.Kind.BONUS, reason="start")
        spend_credits(someone, 1, reason="spend")
    # The ledger's invariant (2 queries), one query per grant check (5) and the hold check (1), however many users.
    with django_assert_max_num_queries(8):
        run("audit_credits")
    for _ in range(5):
        corrupt_balance(make_user(), 4)
    with django_assert_max_num_queries(8), pytest.raises(CommandError, match="5 profiles broken"):
        run("audit_credits")
