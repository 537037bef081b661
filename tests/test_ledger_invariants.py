"""billing.ledger.invariants: the one definition of a sound ledger finds each kind of corruption
(a balance moved without its entry, an entry without its balance change, a wrong newest
balance_after, a wrong balance_after earlier in the history) and nothing in a sound ledger."""

import pytest

from billing import ledger
from billing.ledger.invariants import BrokenProfile, broken_profiles, entries_off_running_sum
from billing.models import LedgerEntry
from tests.conftest import corrupt_balance, insert_raw_entry

BONUS = LedgerEntry.Kind.BONUS


@pytest.fixture
def sound(user, other_user, make_user):
    """Two profiles with history and one without entries, all sound."""
    make_user()
    ledger.add_credits(user, 5, kind=BONUS, reason="start")
    ledger.spend_credits(user, 2, reason="spend")
    ledger.add_credits(other_user, 1, kind=BONUS, reason="start")


def test_a_sound_ledger_has_no_violations(sound):
    assert list(broken_profiles()) == []
    assert entries_off_running_sum() == 0


def test_finds_a_balance_moved_without_its_entry(sound, user):
    corrupt_balance(user, 50)
    assert list(broken_profiles()) == [BrokenProfile(user.profile.pk, user.email, 50, 3, 3)]


def test_finds_credits_on_a_profile_without_entries(make_user):
    someone = make_user()
    corrupt_balance(someone, 3)
    assert list(broken_profiles()) == [BrokenProfile(someone.profile.pk, someone.email, 3, 0, None)]


def test_finds_an_entry_without_its_balance_change(sound, user):
    insert_raw_entry(user, delta=4, balance_after=7)
    assert list(broken_profiles()) == [BrokenProfile(user.profile.pk, user.email, 3, 7, 7)]


def test_finds_a_wrong_newest_balance_after_though_the_sum_matches(sound, user):
    insert_raw_entry(user, delta=2, balance_after=99)
    corrupt_balance(user, 5)
    assert list(broken_profiles()) == [BrokenProfile(user.profile.pk, user.email, 5, 5, 99)]
    assert entries_off_running_sum() == 1


def test_finds_a_wrong_balance_after_earlier_in_the_history(sound, user):
    """The newest entry and the balance agree; only the running sum shows the bad middle row."""
    insert_raw_entry(user, delta=1, balance_after=40)
    insert_raw_entry(user, delta=1, balance_after=5)
    corrupt_balance(user, 5)
    assert list(broken_profiles()) == []
    assert entries_off_running_sum() == 1
