"""Holds (docs/DESIGN.md, "Holds"): reserve credits, capture what was used exactly once, release
the rest; holds expire by themselves; the available balance is credits less active holds.
Through the ledger's public functions, on PostgreSQL (billing_capture) and SQLite (the ORM)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing import ledger
from billing.exceptions import HoldEnded, IdempotencyKeyReused, InsufficientCredits
from billing.ledger.invariants import broken_profiles, grant_problems
from billing.models import CreditGrant, GrantAllocation, Hold, LedgerEntry
from tests.stripe_helpers import wait_for

pytestmark = pytest.mark.django_db

Status = Hold.Status


def funded(user, credits=10):
    ledger.grant_credits(user, credits, reason="start", category=CreditGrant.Category.PAID)
    return user


def assert_books_sound(user):
    assert list(broken_profiles()) == [] and grant_problems() == []
    user.profile.refresh_from_db()
    active = Hold.objects.filter(profile=user.profile, status=Status.ACTIVE)
    assert user.profile.held == sum(hold.amount for hold in active)


def test_a_hold_reserves_credits_from_the_available_balance(user):
    funded(user, 10)
    hold = ledger.hold_credits(user, 4, reason="ai call")
    assert (hold.status, hold.amount, hold.captured) == (Status.ACTIVE, 4, 0)
    assert ledger.get_balance(user) == 6
    with pytest.raises(InsufficientCredits) as short:
        ledger.spend_credits(user, 7, reason="too much")
    assert short.value.balance == 6
    with pytest.raises(InsufficientCredits):
        ledger.hold_credits(user, 7, reason="too much")
    ledger.spend_credits(user, 6, reason="the rest")
    assert ledger.get_balance(user) == 0
    assert_books_sound(user)


def test_capture_spends_what_was_used_and_frees_the_rest(user):
    funded(user, 10)
    hold = ledger.hold_credits(user, 5, reason="export")
    entry = ledger.capture_hold(hold, 3)
    assert (entry.kind, entry.delta, entry.balance_after, entry.reason) == (LedgerEntry.Kind.CAPTURE, -3, 7, "export")
    assert list(GrantAllocation.objects.filter(entry=entry).values_list("amount", flat=True)) == [3]
    hold.refresh_from_db()
    assert (hold.status, hold.captured, hold.entry_id) == (Status.CAPTURED, 3, entry.pk)
    assert ledger.get_balance(user) == 7
    assert_books_sound(user)


def test_capture_happens_exactly_once(user):
    funded(user, 10)
    hold = ledger.hold_credits(user, 5, reason="export")
    first = ledger.capture_hold(hold, 2)
    again = ledger.capture_hold(hold, 5)  # a repeat, even with another amount, returns the first
    assert again.pk == first.pk
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CAPTURE).count() == 1
    assert ledger.get_balance(user) == 8
    assert_books_sound(user)


def test_capturing_nothing_frees_the_hold_and_writes_no_entry(user):
    funded(user, 10)
    hold = ledger.hold_credits(user, 5, reason="cached answer")
    assert ledger.capture_hold(hold, 0) is None
    hold.refresh_from_db()
    assert (hold.status, hold.captured) == (Status.CAPTURED, 0)
    assert ledger.get_balance(user) == 10 and not LedgerEntry.objects.filter(kind="capture").exists()


@pytest.mark.parametrize("amount", [-1, 6, 2.5, True, "3"])
def test_a_capture_beyond_the_hold_is_refused(user, amount):
    funded(user, 10)
    hold = ledger.hold_credits(user, 5, reason="x")
    with pytest.raises(ValueError, match="a capture takes from 0 to the 5 held credits"):
        ledger.capture_hold(hold, amount)
    hold.refresh_from_db()
    assert hold.status == Status.ACTIVE


def test_release_frees_everything_once_and_a_released_hold_cannot_be_captured(user):
    funded(user, 10)
    hold = ledger.hold_credits(user, 5, reason="x")
    ledger.release_hold(hold)
    ledger.release_hold(hold)
    assert ledger.get_balance(user) == 10
    with pytest.raises(HoldEnded):
        ledger.capture_hold(hold, 1)
    assert not LedgerEntry.objects.filter(kind="capture").exists()
    assert_books_sound(user)


def test_a_repeated_hold_key_returns_the_first_hold(user):
    funded(user, 10)
    first = ledger.hold_credits(user, 3, reason="x", idempotency_key="job:1")
    again = ledger.hold_credits(user, 3, reason="x", idempotency_key="job:1")
    assert again.pk == first.pk and ledger.get_balance(user) == 7
    with pytest.raises(IdempotencyKeyReused):
        ledger.hold_credits(user, 4, reason="x", idempotency_key="job:1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amount": 0}, "amount must be a positive whole number"),
        ({"amount": 2**63}, "amount must be a positive whole number"),
        ({"reason": " "}, "needs a reason"),
        ({"expires_in": timedelta(0)}, "expires_in must be"),
        ({"expires_in": timedelta(days=31)}, "expires_in must be"),
        ({"expires_in": 60}, "expires_in must be"),
    ],
)
def test_a_hold_that_makes_no_sense_is_refused(user, kwargs, message):
    funded(user, 10)
    arguments = {"amount": 1, "reason": "x", **kwargs}
    with pytest.raises(ValueError, match=message):
        ledger.hold_credits(user, arguments.pop("amount"), **arguments)
    assert not Hold.objects.exists()


def test_a_hold_stops_reserving_the_moment_it_expires(user):
    funded(user, 10)
    hold = ledger.hold_credits(user, 6, reason="x", expires_in=timedelta(seconds=1))
    assert ledger.get_balance(user, now=hold.expires_at - timedelta(microseconds=1)) == 4
    assert ledger.get_balance(user, now=hold.expires_at) == 10
    wait_for(lambda: timezone.now() > hold.expires_at, timeout=5, message="the hold's expiry")
    assert Hold.objects.get().status == Status.ACTIVE  # not swept yet, and already not in the way
    assert ledger.get_balance(user) == 10
    ledger.spend_credits(user, 10, reason="all of it")  # sweeps the hold first
    assert Hold.objects.get().status == Status.EXPIRED
    assert_books_sound(user)


def test_an_expired_hold_is_captured_only_if_the_credits_are_still_there(user):
    funded(user, 10)
    hold = ledger.hold_credits(user, 6, reason="slow job", expires_in=timedelta(seconds=1))
    wait_for(lambda: timezone.now() > hold.expires_at, timeout=5, message="the hold's expiry")
    entry = ledger.capture_hold(hold, 4)  # the credits are there: captured all the same
    assert entry.delta == -4 and Hold.objects.get().status == Status.CAPTURED
    late = ledger.hold_credits(user, 5, reason="slower job", expires_in=timedelta(seconds=1))
    wait_for(lambda: timezone.now() > late.expires_at, timeout=5, message="the hold's expiry")
    ledger.spend_credits(user, 5, reason="meanwhile")  # the lapsed hold kept nothing back
    with pytest.raises(InsufficientCredits):
        ledger.capture_hold(late, 2)
    late.refresh_from_db()
    assert late.status == Status.EXPIRED and ledger.get_balance(user) == 1
    assert_books_sound(user)


def test_expire_credits_sweeps_expired_holds(user):
    funded(user, 10)
    hold = ledger.hold_credits(user, 6, reason="x", expires_in=timedelta(minutes=1))
    ledger.expire_credits(now=hold.expires_at - timedelta(seconds=1))
    assert Hold.objects.get().status == Status.ACTIVE
    ledger.expire_credits(now=hold.expires_at)
    hold.refresh_from_db()
    user.profile.refresh_from_db()
    assert (hold.status, user.profile.held, user.profile.next_hold_expiry) == (Status.EXPIRED, 0, None)


def test_a_capture_draws_grants_in_the_drawdown_order(user):
    paid = ledger.grant_credits(user, 5, reason="paid", category="paid").opened_grant
    promo = ledger.grant_credits(user, 2, reason="promo", expires_at=timezone.now() + timedelta(days=3)).opened_grant
    entry = ledger.capture_hold(ledger.hold_credits(user, 4, reason="x"), 4)
    assert list(GrantAllocation.objects.filter(entry=entry).order_by("id").values_list("grant_id", "amount")) == [
        (promo.pk, 2),
        (paid.pk, 2),
    ]
    assert_books_sound(user)


def test_a_refund_may_take_credits_a_hold_reserved_and_the_capture_then_fails(user):
    # The money went back to the customer: the credits go, held or not; what the hold then
    # cannot capture is refused rather than taken below zero.
    funded(user, 2)
    hold = ledger.hold_credits(user, 2, reason="x")
    entry, shortfall = ledger.claw_back_credits(user, 2, kind=LedgerEntry.Kind.ADJUSTMENT, reason="refund")
    assert (entry.delta, shortfall) == (-2, 0)
    with pytest.raises(InsufficientCredits):
        ledger.capture_hold(hold, 2)
    ledger.release_hold(hold)
    assert ledger.get_balance(user) == 0
    assert_books_sound(user)


def test_audit_finds_reserved_credits_no_hold_accounts_for(user):
    from django.core.management import CommandError, call_command
    from django.db import connection

    from billing.ledger.invariants import hold_problems

    funded(user, 10)
    ledger.hold_credits(user, 3, reason="x")
    assert hold_problems() == []
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_profile SET held = held + 1 WHERE user_id = %s", [user.pk])
    assert [problem for _, problem in hold_problems()] == ["held 4 but its active holds reserve 3"]
    with pytest.raises(CommandError, match="1 grant or hold problem"):
        call_command("audit_credits")
