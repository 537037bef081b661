"""Credit grants under real concurrency: 8 OS processes spending, granting (some grants expiring
during the run), buying, sweeping expired credits, clawing back and reinstating on a few
profiles at once (tests/test_ledger_concurrency.py has the single-balance cases, and why
processes). Afterwards the books agree: billing.ledger.invariants finds nothing, no grant went
below zero, nothing was drawn from a grant after it expired, and every spend a worker was told
succeeded drew exactly its amount from the grants."""

import random
import time
from datetime import timedelta

import pytest
from django.db.models import Min, Sum
from django.utils import timezone

from accounts.models import User
from billing import ledger
from billing.exceptions import InsufficientCredits
from billing.ledger.invariants import broken_profiles, entries_off_running_sum, grant_problems
from billing.models import CreditGrant, CreditPack, GrantAllocation, LedgerEntry, Payment, Profile
from tests.conftest import run_in_processes

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

Kind = LedgerEntry.Kind
PROCESSES = 8
PROFILES = 3
MIN_OPERATIONS = 60  # per process, and on until its short-lived grants have expired
SHORT_GRANTS_UNTIL = 20  # short-lived grants are made among a process's first operations only
DEADLINE_SECONDS = 20  # per process: far beyond what the run needs, so reaching it is a failure


def _buy(user, credits, *, expires_at=None, reason="purchase"):
    pack = CreditPack.objects.get(slug="starter")
    payment = Payment.objects.create(
        user=user, pack=pack, credits=credits, amount=pack.amount, currency=pack.currency, status="succeeded"
    )
    ledger.add_credits(user, credits, kind=Kind.PURCHASE, reason=reason, payment=payment, expires_at=expires_at)
    return payment.pk


def _worker(worker, user_ids, payment_ids):
    """One process's share: a deterministic mix of every operation on grants, on random
    profiles, until it has done MIN_OPERATIONS and every short-lived grant it made has expired."""
    rng = random.Random(worker)
    users = [User.objects.get(pk=pk) for pk in user_ids]
    payments = {pk: list(ids) for pk, ids in payment_ids.items()}  # user id -> payment ids
    spends, clawed, counts = [], [], {}
    short_until = timezone.now()
    began = time.monotonic()
    done = 0

    def count(what):
        counts[what] = counts.get(what, 0) + 1

    while done < MIN_OPERATIONS or timezone.now() <= short_until:
        if time.monotonic() - began > DEADLINE_SECONDS:
            return {"timed_out": True, "counts": counts}
        done += 1
        user = rng.choice(users)
        roll = rng.random()
        key = f"w{worker}-{done}"
        if done <= 2 or (done <= SHORT_GRANTS_UNTIL and roll < 0.15):
            # Expires while the run goes on: the sweep, the lazy sweep and the spends all meet it.
            expires_at = timezone.now() + timedelta(seconds=rng.uniform(1.0, 2.0))
            ledger.grant_credits(user, rng.randint(50, 150), reason=f"{key} flash promotion", expires_at=expires_at)
            short_until = max(short_until, expires_at)
            count("short grant")
        elif roll < 0.45:
            amount = rng.randint(1, 4)
            try:
                entry = ledger.spend_credits(user, amount, reason=f"{key} spend", idempotency_key=key)
            except InsufficientCredits:
                count("spend refused")
            else:
                spends.append((entry.pk, amount))
                count("spend")
        elif roll < 0.55:
            expires_at = rng.choice([None, timezone.now() + timedelta(hours=1)])
            category = rng.choice([CreditGrant.Category.PROMOTIONAL, CreditGrant.Category.PAID])
            ledger.grant_credits(
                user, rng.randint(1, 6), reason=f"{key} grant", category=category, expires_at=expires_at
            )
            count("grant")
        elif roll < 0.65:
            expires_at = rng.choice([None, timezone.now() + timedelta(days=30)])
            payments[user.pk].append(_buy(user, rng.randint(2, 10), expires_at=expires_at, reason=f"{key} purchase"))
            count("purchase")
        elif roll < 0.75:
            ledger.expire_credits()
            count("expire")
        elif roll < 0.88 or not clawed:
            payment_id = rng.choice(payments[user.pk])
            kind = rng.choice([Kind.REFUND, Kind.DISPUTE])
            entry, short = ledger.claw_back_credits(
                user,
                rng.randint(1, 6),
                kind=kind,
                reason=f"{key} clawback",
                payment=Payment.objects.get(pk=payment_id),
                idempotency_key=key,
            )
            if entry is not None:
                clawed.append((user.pk, payment_id, -entry.delta))
            count("clawback")
        else:
            user_id, payment_id, amount = clawed.pop(rng.randrange(len(clawed)))
            entry = ledger.reinstate_credits(
                User.objects.get(pk=user_id),
                amount,
                payment=Payment.objects.get(pk=payment_id),
                reason=f"{key} reinstatement",
                idempotency_key=key,
            )
            assert entry.delta == amount
            count("reinstatement")
    return {"timed_out": False, "counts": counts, "spends": spends}


def test_eight_processes_on_grants_keep_the_books(make_user):
    started = timezone.now()
    users = [make_user() for _ in range(PROFILES)]
    payment_ids = {}
    for user in users:
        payment_ids[user.pk] = [_buy(user, 30)]
        ledger.grant_credits(user, 20, reason="welcome")
        ledger.grant_credits(user, 10, reason="autumn promotion", expires_at=timezone.now() + timedelta(hours=1))

    results = run_in_processes(_worker, [(w, [u.pk for u in users], payment_ids) for w in range(PROCESSES)])

    assert not [r for r in results if r["timed_out"]], "a worker ran past its deadline"
    counts = {}
    for result in results:
        for what, n in result["counts"].items():
            counts[what] = counts.get(what, 0) + n
    for what in ("spend", "short grant", "grant", "purchase", "expire", "clawback", "reinstatement"):
        assert counts.get(what), f"no {what} happened: {counts}"

    # Every short-lived grant has expired by now; a final sweep finds whatever the workers left.
    ledger.expire_credits()
    assert not CreditGrant.objects.filter(expires_at__lte=timezone.now(), remaining__gt=0).exists()
    short_lived = CreditGrant.objects.filter(created_at__gte=started, expires_at__lte=timezone.now())
    assert short_lived.count() >= PROCESSES * 2
    expired = LedgerEntry.objects.filter(kind=Kind.EXPIRY)
    assert expired.exists()

    assert list(broken_profiles()) == []
    assert grant_problems() == []  # balances == grants, draws add up, nothing drawn after expiry, hints
    assert entries_off_running_sum() == 0
    assert CreditGrant.objects.aggregate(lowest=Min("remaining"))["lowest"] >= 0
    assert not Profile.objects.filter(credits__lt=0).exists()

    spends = dict(pair for result in results for pair in result["spends"])
    assert spends, "no spend succeeded"
    drawn = dict(
        GrantAllocation.objects.filter(entry_id__in=spends)
        .values("entry_id")
        .annotate(total=Sum("amount"))
        .values_list("entry_id", "total")
    )
    assert drawn == spends
    assert LedgerEntry.objects.filter(kind=Kind.SPEND, pk__in=spends).count() == len(spends)
    for user in users:
        profile = Profile.objects.get(user=user)
        held = CreditGrant.objects.filter(profile=profile).aggregate(total=Sum("remaining"))["total"]
        assert ledger.get_balance(user) == profile.credits == held


def _sweep(at):
    return ledger.expire_credits(now=at)


def test_two_sweeps_at_once_expire_each_grant_once(make_user, monkeypatch):
    """Two expire_credits over the same forty profiles at the same moment, in batches of a few
    profiles each (the children are forked, so they inherit the small batch): every expired grant
    gets one expiry entry, the two totals add up to what expired, and the books agree."""
    from billing.ledger import operations

    monkeypatch.setattr(operations, "EXPIRY_BATCH", 3)
    at = timezone.now() + timedelta(days=1)
    users = [make_user() for _ in range(40)]
    for user in users:
        ledger.grant_credits(user, 3, reason="flash", expires_at=at)
        ledger.grant_credits(user, 2, reason="flash, later", expires_at=at + timedelta(minutes=1))
        ledger.grant_credits(user, 5, reason="welcome")

    totals = run_in_processes(_sweep, [(at + timedelta(minutes=2),)] * 2)

    assert sum(totals) == 40 * 5
    expiring = CreditGrant.objects.filter(expires_at__isnull=False)
    assert expiring.count() == 80
    assert not expiring.filter(remaining__gt=0).exists()
    entries = LedgerEntry.objects.filter(kind=Kind.EXPIRY)
    assert entries.count() == 80
    drawn = GrantAllocation.objects.filter(entry__kind=Kind.EXPIRY)
    assert sorted(drawn.values_list("grant_id", flat=True)) == sorted(expiring.values_list("pk", flat=True))
    assert not Profile.objects.exclude(credits=5).exists()
    assert not Profile.objects.filter(next_expiry__isnull=False).exists()
    assert list(broken_profiles()) == []
    assert grant_problems() == []
    assert entries_off_running_sum() == 0
