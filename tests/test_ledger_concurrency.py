"""The ledger under real concurrency: separate OS processes, each with its own PostgreSQL
connection, hitting the same rows at once. (Threads in one process would share the GIL and a
test database transaction; processes are what production's gunicorn workers are.)"""

import pytest

from accounts.models import User
from billing import ledger
from billing.exceptions import InsufficientCredits
from billing.ledger.invariants import broken_profiles, entries_off_running_sum
from billing.models import LedgerEntry, Profile
from tests.conftest import run_in_processes

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _spend_many(user_id, times):
    user = User.objects.get(pk=user_id)
    ok = refused = 0
    for i in range(times):
        try:
            ledger.spend_credits(user, 1, reason=f"spend {i}")
            ok += 1
        except InsufficientCredits:
            refused += 1
    return ok, refused


def _mixed(user_id, worker, rounds):
    user = User.objects.get(pk=user_id)
    done = 0
    for i in range(rounds):
        if i % 3 == 0:
            ledger.add_credits(user, 2, kind=LedgerEntry.Kind.BONUS, reason=f"w{worker} add {i}")
            done += 1
        else:
            try:
                ledger.spend_credits(user, 1, reason=f"w{worker} spend {i}")
                done += 1
            except InsufficientCredits:
                pass
    return done


def _same_key(user_id, key):
    user = User.objects.get(pk=user_id)
    return ledger.add_credits(user, 7, kind=LedgerEntry.Kind.BONUS, reason="promo", idempotency_key=key).pk


def _assert_invariant(user):
    profile = Profile.objects.get(user=user)
    assert [broken for broken in broken_profiles() if broken.profile_id == profile.pk] == []
    assert not LedgerEntry.objects.filter(profile=profile, balance_after__lt=0).exists()


def test_eight_processes_spending_never_overdraw(make_user):
    user = make_user()
    ledger.add_credits(user, 100, kind=LedgerEntry.Kind.BONUS, reason="seed")
    results = run_in_processes(_spend_many, [(user.pk, 50)] * 8)
    assert sum(ok for ok, _ in results) == 100
    assert sum(refused for _, refused in results) == 8 * 50 - 100
    assert ledger.get_balance(user) == 0
    assert LedgerEntry.objects.filter(profile__user=user, kind="spend").count() == 100
    _assert_invariant(user)


def test_concurrent_adds_and_spends_keep_the_invariant(make_user):
    user = make_user()
    ledger.add_credits(user, 10, kind=LedgerEntry.Kind.BONUS, reason="seed")
    run_in_processes(_mixed, [(user.pk, w, 60) for w in range(8)])
    _assert_invariant(user)
    assert entries_off_running_sum() == 0  # every entry saw the balance its predecessors left


def test_one_idempotency_key_from_eight_processes_creates_one_entry(make_user):
    user = make_user()
    ids = run_in_processes(_same_key, [(user.pk, "promo-2026")] * 8)
    assert len(set(ids)) == 1
    assert LedgerEntry.objects.filter(idempotency_key="promo-2026").count() == 1
    assert ledger.get_balance(user) == 7
    _assert_invariant(user)
