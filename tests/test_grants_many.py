"""A debit reads only the grants it draws from (at most one per credit), on PostgreSQL's
billing_spend and the ORM path alike: draws that span many small grants still take every credit,
in the drawdown order, and leave the rest untouched; and both paths follow the one drawdown order
(docs/DESIGN.md, "Credit grants")."""

from datetime import timedelta

from django.utils import timezone

from billing import ledger
from billing.ledger.invariants import broken_profiles, grant_problems
from billing.models import CreditGrant, CreditPack, Payment

DAILY = 40


def _daily_bonuses(user) -> list[int]:
    return [ledger.grant_credits(user, 1, reason=f"daily bonus {day}").opened_grant.pk for day in range(DAILY)]


def _remaining(grant_ids) -> list[int]:
    remaining = dict(CreditGrant.objects.filter(pk__in=grant_ids).values_list("pk", "remaining"))
    return [remaining[pk] for pk in grant_ids]


def test_a_spend_across_many_one_credit_grants_takes_each_in_order(user):
    daily = _daily_bonuses(user)
    soon = ledger.grant_credits(user, 5, reason="weekend offer", expires_at=timezone.now() + timedelta(hours=1))
    entry = ledger.spend_credits(user, 25, reason="a long reading")
    drawn = dict(entry.allocations.values_list("grant_id", "amount"))
    assert drawn == {soon.opened_grant.pk: 5, **{pk: 1 for pk in daily[:20]}}  # soonest expiry, then the oldest
    assert _remaining(daily) == [0] * 20 + [1] * 20
    assert ledger.get_balance(user) == 20
    assert list(broken_profiles()) == [] and grant_problems() == []


def test_a_clawback_takes_the_payments_grant_first_then_many_small_ones(user):
    daily = _daily_bonuses(user)
    pack = CreditPack.objects.get(slug="starter")
    payment = Payment.objects.create(user=user, pack=pack, credits=3, amount=pack.amount, currency=pack.currency)
    purchase = ledger.add_credits(user, 3, kind="purchase", reason="purchase", payment=payment)
    entry, short = ledger.claw_back_credits(user, 10, kind="refund", reason="refunded", payment=payment)
    assert short == 0
    drawn = dict(entry.allocations.values_list("grant_id", "amount"))
    assert drawn == {purchase.opened_grant.pk: 3, **{pk: 1 for pk in daily[:7]}}
    assert _remaining(daily) == [0] * 7 + [1] * (DAILY - 7)
    assert list(broken_profiles()) == [] and grant_problems() == []


def test_spends_follow_the_one_drawdown_order(user):
    """billing_spend (PostgreSQL) spells the drawdown order in SQL; grants.DRAWDOWN_ORDER is its
    definition: one credit at a time, each spend takes the grant the definition puts first."""
    from billing.ledger.grants import open_grants

    later, sooner = timezone.now() + timedelta(hours=2), timezone.now() + timedelta(hours=1)
    for category, expires_at in [
        ("paid", None),
        ("promotional", None),
        ("paid", later),
        ("promotional", later),
        ("paid", sooner),
        ("promotional", None),  # same as the second, younger
    ]:
        ledger.grant_credits(user, 1, reason=f"{category} {expires_at}", category=category, expires_at=expires_at)
    expected = list(open_grants("default", user.profile.pk, timezone.now()).values_list("pk", flat=True))
    drawn = []
    for _ in expected:
        entry = ledger.spend_credits(user, 1, reason="one reading")
        drawn += list(entry.allocations.values_list("grant_id", flat=True))
    assert drawn == expected
    assert ledger.get_balance(user) == 0
