"""billing.ledger: the only writer of balances. Each test ends by checking the invariant."""

import pytest

from billing import ledger
from billing.exceptions import IdempotencyKeyReused, InsufficientCredits
from billing.ledger.invariants import broken_profiles
from billing.models import LedgerEntry, Profile

Kind = LedgerEntry.Kind


def assert_invariant(user):
    profile = Profile.objects.get(user=user)
    assert [broken for broken in broken_profiles() if broken.profile_id == profile.pk] == []
    assert profile.credits >= 0


def test_new_user_has_a_profile_with_zero_credits(user):
    assert user.profile.credits == 0
    assert ledger.get_balance(user) == 0
    assert_invariant(user)


def test_add_credits_writes_entry_and_balance(user, other_user):
    entry = ledger.add_credits(user, 5, kind=Kind.BONUS, reason="welcome", actor=other_user)
    assert ledger.get_balance(user) == 5
    stored = LedgerEntry.objects.get(pk=entry.pk)
    # Kind.BONUS keeps its stored value: existing append-only rows hold "grant".
    assert (stored.delta, stored.balance_after, stored.kind, stored.reason) == (5, 5, "grant", "welcome")
    assert stored.actor == other_user
    assert stored.created_at is not None
    assert (entry.delta, entry.balance_after) == (5, 5)
    assert_invariant(user)


def test_spend_credits_takes_from_balance(user):
    ledger.add_credits(user, 3, kind=Kind.BONUS, reason="seed")
    entry = ledger.spend_credits(user, 2, reason="report")
    assert (entry.delta, entry.balance_after, entry.kind) == (-2, 1, "spend")
    assert ledger.get_balance(user) == 1
    assert_invariant(user)


def test_spend_exactly_the_balance_reaches_zero(user):
    ledger.add_credits(user, 2, kind=Kind.BONUS, reason="seed")
    ledger.spend_credits(user, 2, reason="all of it")
    assert ledger.get_balance(user) == 0
    assert_invariant(user)


def test_insufficient_credits_changes_nothing(user):
    ledger.add_credits(user, 1, kind=Kind.BONUS, reason="seed")
    with pytest.raises(InsufficientCredits) as raised:
        ledger.spend_credits(user, 2, reason="too much")
    assert (raised.value.balance, raised.value.requested) == (1, 2)
    assert "need 2 credits but have 1" in raised.value.user_message
    assert ledger.get_balance(user) == 1
    assert LedgerEntry.objects.count() == 1
    assert_invariant(user)


def test_adjust_credits_both_directions_records_actor(user, other_user):
    up = ledger.adjust_credits(user, 10, reason="goodwill", actor=other_user)
    down = ledger.adjust_credits(user, -4, reason="correction", actor=other_user)
    assert (up.delta, up.balance_after, down.delta, down.balance_after) == (10, 10, -4, 6)
    assert {e.actor_id for e in LedgerEntry.objects.all()} == {other_user.pk}
    assert all(e.kind == "adjustment" for e in LedgerEntry.objects.all())
    assert_invariant(user)


def test_adjust_below_zero_is_refused(user, other_user):
    ledger.adjust_credits(user, 3, reason="seed", actor=other_user)
    with pytest.raises(InsufficientCredits):
        ledger.adjust_credits(user, -4, reason="too far", actor=other_user)
    assert ledger.get_balance(user) == 3
    assert_invariant(user)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True, None])
def test_add_and_spend_refuse_non_positive_or_non_integer_amounts(user, bad):
    with pytest.raises(ValueError):
        ledger.add_credits(user, bad, kind=Kind.BONUS, reason="x")
    with pytest.raises(ValueError):
        ledger.spend_credits(user, bad, reason="x")
    assert LedgerEntry.objects.count() == 0
    assert_invariant(user)


@pytest.mark.parametrize("bad_delta", [0, 2.0, "5", False])
def test_adjust_refuses_zero_or_non_integer_delta(user, other_user, bad_delta):
    with pytest.raises(ValueError):
        ledger.adjust_credits(user, bad_delta, reason="x", actor=other_user)
    assert LedgerEntry.objects.count() == 0


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_reason_is_required(user, other_user, reason):
    with pytest.raises(ValueError):
        ledger.adjust_credits(user, 1, reason=reason, actor=other_user)
    with pytest.raises(ValueError):
        ledger.add_credits(user, 1, kind=Kind.BONUS, reason=reason)
    assert ledger.get_balance(user) == 0


def test_add_credits_refuses_spend_kind_and_unknown_kind(user):
    for kind in ("spend", "bonus"):
        with pytest.raises(ValueError):
            ledger.add_credits(user, 1, kind=kind, reason="x")
    assert LedgerEntry.objects.count() == 0


def test_repeated_idempotency_key_returns_first_entry_and_changes_nothing(user):
    first = ledger.add_credits(user, 5, kind=Kind.BONUS, reason="promo", idempotency_key="promo-1")
    again = ledger.add_credits(user, 5, kind=Kind.BONUS, reason="promo", idempotency_key="promo-1")
    assert again.pk == first.pk
    assert ledger.get_balance(user) == 5
    spend = ledger.spend_credits(user, 2, reason="r", idempotency_key="req-9")
    assert ledger.spend_credits(user, 2, reason="r", idempotency_key="req-9").pk == spend.pk
    assert ledger.get_balance(user) == 3
    assert LedgerEntry.objects.count() == 2
    assert_invariant(user)


def test_repeated_spend_key_returns_first_entry_even_when_balance_is_now_short(user):
    ledger.add_credits(user, 1, kind=Kind.BONUS, reason="seed")
    spend = ledger.spend_credits(user, 1, reason="r", idempotency_key="once")
    assert ledger.spend_credits(user, 1, reason="r", idempotency_key="once").pk == spend.pk
    assert ledger.get_balance(user) == 0
    assert_invariant(user)


def test_idempotency_key_reused_for_a_different_operation_is_an_error(user, other_user):
    ledger.add_credits(user, 5, kind=Kind.BONUS, reason="promo", idempotency_key="k")
    with pytest.raises(IdempotencyKeyReused):
        ledger.add_credits(user, 6, kind=Kind.BONUS, reason="promo", idempotency_key="k")
    with pytest.raises(IdempotencyKeyReused):
        ledger.add_credits(other_user, 5, kind=Kind.BONUS, reason="promo", idempotency_key="k")
    assert ledger.get_balance(user) == 5
    assert ledger.get_balance(other_user) == 0


def test_user_without_profile_gets_one_on_first_credit(user):
    Profile.objects.filter(user=user).delete()
    ledger.add_credits(user, 2, kind=Kind.BONUS, reason="seed")
    assert ledger.get_balance(user) == 2
    assert_invariant(user)


def test_claw_back_never_goes_below_zero_and_reports_the_shortfall(user):
    ledger.add_credits(user, 5, kind=Kind.BONUS, reason="seed")
    ledger.spend_credits(user, 3, reason="used")
    entry, shortfall = ledger.claw_back_credits(user, 5, kind=Kind.REFUND, reason="refund", idempotency_key="rf")
    assert (entry.delta, entry.balance_after, shortfall) == (-2, 0, 3)
    again, again_short = ledger.claw_back_credits(user, 5, kind=Kind.REFUND, reason="refund", idempotency_key="rf")
    assert again.pk == entry.pk and again_short == 0
    nothing, all_short = ledger.claw_back_credits(user, 4, kind=Kind.DISPUTE, reason="dispute")
    assert nothing is None and all_short == 4
    assert ledger.get_balance(user) == 0
    assert_invariant(user)


def test_a_long_history_keeps_the_invariant(user, other_user):
    for i in range(1, 30):
        ledger.add_credits(user, i, kind=Kind.BONUS, reason=f"g{i}")
        ledger.spend_credits(user, i // 2 or 1, reason=f"s{i}")
        if i % 7 == 0:
            ledger.adjust_credits(user, -1, reason="fix", actor=other_user)
    assert_invariant(user)


@pytest.mark.postgres
def test_postgresql_prepares_the_ledger_statement_once_per_connection(user):
    """A contract test of the implementation (billing/ledger/postgresql.py): it pins the SQL text
    of the one-statement write, so it is meant to move when that statement changes."""
    from django.db import connection

    ledger.add_credits(user, 3, kind=Kind.BONUS, reason="seed")
    ledger.spend_credits(user, 1, reason="r")
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        statements = [row[0] for row in cursor.fetchall()]
    assert [s for s in statements if "WITH u AS" in s and "billing_ledgerentry" in s]
    assert_invariant(user)


@pytest.mark.parametrize("prepared", [True, False])
def test_ledger_works_with_and_without_prepared_statements(user, settings, prepared):
    settings.BILLING_LEDGER_PREPARED_STATEMENTS = prepared
    ledger.add_credits(user, 2, kind=Kind.BONUS, reason="seed", idempotency_key="p")
    assert ledger.add_credits(user, 2, kind=Kind.BONUS, reason="seed", idempotency_key="p").balance_after == 2
    ledger.spend_credits(user, 2, reason="r")
    with pytest.raises(InsufficientCredits):
        ledger.spend_credits(user, 1, reason="r")
    assert_invariant(user)
