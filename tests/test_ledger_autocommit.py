"""billing.ledger outside any transaction (autocommit), as a view or a worker calls it.

On PostgreSQL the balance UPDATE and its ledger INSERT are then sent as one statement with no
BEGIN/COMMIT around it (its own transaction); inside a caller's transaction they run under a
savepoint. These tests use real commits (transaction=True) so the autocommit path really runs,
and check that each outcome is all-or-nothing either way.
"""

import pytest
from django.db import IntegrityError, connection, transaction

from billing import ledger
from billing.exceptions import IdempotencyKeyReused, InsufficientCredits
from billing.models import LedgerEntry, Profile

pytestmark = pytest.mark.django_db(transaction=True)


def balance_and_entries(user) -> tuple[int, int]:
    profile = Profile.objects.get(user=user)
    return profile.credits, LedgerEntry.objects.filter(profile=profile).count()


def test_spend_outside_a_transaction_commits_balance_and_entry_together(user):
    assert connection.get_autocommit() and not connection.in_atomic_block
    ledger.add_credits(user, 3, kind=LedgerEntry.Kind.BONUS, reason="seed")
    entry = ledger.spend_credits(user, 2, reason="used")
    assert (entry.delta, entry.balance_after) == (-2, 1)
    assert LedgerEntry.objects.get(pk=entry.pk).balance_after == 1
    assert balance_and_entries(user) == (1, 2)


def test_short_balance_outside_a_transaction_changes_nothing(user):
    ledger.add_credits(user, 1, kind=LedgerEntry.Kind.BONUS, reason="seed")
    with pytest.raises(InsufficientCredits):
        ledger.spend_credits(user, 2, reason="too much")
    assert balance_and_entries(user) == (1, 1)


def test_repeated_key_outside_a_transaction_returns_the_first_entry(user):
    ledger.add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="seed")
    first = ledger.spend_credits(user, 1, reason="once", idempotency_key="spend-1")
    again = ledger.spend_credits(user, 1, reason="once", idempotency_key="spend-1")
    assert again.pk == first.pk
    assert balance_and_entries(user) == (4, 2)


def test_a_failed_insert_undoes_its_balance_update(user):
    """The key is taken by another operation: the statement's INSERT fails, and its UPDATE with it."""
    ledger.add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="seed", idempotency_key="taken")
    with pytest.raises(IdempotencyKeyReused):
        ledger.spend_credits(user, 1, reason="clash", idempotency_key="taken")
    assert balance_and_entries(user) == (5, 1)


def test_inside_a_callers_transaction_a_lost_key_race_leaves_it_usable(user, other_user):
    ledger.add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="seed", idempotency_key="k1")
    with transaction.atomic():
        again = ledger.add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="seed", idempotency_key="k1")
        # The collision was contained by a savepoint: the caller's transaction goes on.
        ledger.add_credits(other_user, 2, kind=LedgerEntry.Kind.BONUS, reason="after the collision")
    assert again.delta == 5
    assert balance_and_entries(user) == (5, 1)
    assert balance_and_entries(other_user) == (2, 1)


def test_inside_a_callers_transaction_its_rollback_undoes_the_ledger_write(user):
    ledger.add_credits(user, 3, kind=LedgerEntry.Kind.BONUS, reason="seed")
    with pytest.raises(IntegrityError), transaction.atomic():
        ledger.spend_credits(user, 1, reason="rolled back with the caller")
        raise IntegrityError("the caller fails after spending")
    assert balance_and_entries(user) == (3, 1)
