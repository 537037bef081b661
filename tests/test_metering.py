"""Metered paid actions (billing.metering): hold up to a limit, capture what the block charged,
release everything on an exception; and the paid-view decorators built on holds never hold a
row lock while the view runs."""

import threading
from http import HTTPStatus

import pytest
from django.db import connection, transaction
from django.http import HttpResponse, JsonResponse
from django.test import RequestFactory

from billing import ledger
from billing.decorators import credits_required
from billing.exceptions import InsufficientCredits
from billing.metering import metered, metered_view
from billing.models import CreditGrant, Hold, LedgerEntry
from tests.conftest import run_in_processes

pytestmark = pytest.mark.django_db


def funded(user, credits=10):
    ledger.grant_credits(user, credits, reason="start", category=CreditGrant.Category.PAID)


def test_the_block_pays_what_it_charged(user):
    funded(user)
    with metered(user, up_to=5, reason="AI answer") as meter:
        assert ledger.get_balance(user) == 5  # the limit is reserved while the block runs
        tokens = 2_345
        meter.charge(-(-tokens // 1000))  # 1 credit per 1,000 tokens, rounded up
    assert (meter.charged, meter.entry.delta, meter.entry.reason) == (3, -3, "AI answer")
    assert ledger.get_balance(user) == 7
    assert Hold.objects.get().status == Hold.Status.CAPTURED


def test_an_exception_releases_everything(user):
    funded(user)
    with pytest.raises(RuntimeError, match="upstream"), metered(user, up_to=5, reason="AI answer") as meter:
        meter.charge(2)
        raise RuntimeError("upstream timed out")
    assert ledger.get_balance(user) == 10
    assert Hold.objects.get().status == Hold.Status.RELEASED
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CAPTURE).exists()


def test_charging_more_than_the_limit_captures_the_limit(user, caplog):
    funded(user)
    with metered(user, up_to=4, reason="long answer") as meter:
        meter.charge(3)
        meter.charge(3)
    assert (meter.charged, meter.exceeded, meter.entry.delta) == (6, True, -4)
    assert ledger.get_balance(user) == 6
    assert "charged 6 credits, more than the 4 it held" in caplog.text


def test_charging_nothing_spends_nothing(user):
    funded(user)
    with metered(user, up_to=4, reason="cached") as meter:
        pass
    assert meter.entry is None and ledger.get_balance(user) == 10


@pytest.mark.parametrize("credits", [-1, 1.5, True, "2"])
def test_a_charge_that_is_not_a_whole_number_fails_the_block(user, credits):
    funded(user)
    with pytest.raises(ValueError), metered(user, up_to=4, reason="x") as meter:
        meter.charge(credits)
    assert ledger.get_balance(user) == 10


def test_a_short_balance_never_runs_the_block(user):
    funded(user, 2)
    ran = []
    with pytest.raises(InsufficientCredits), metered(user, up_to=3, reason="x"):
        ran.append(True)
    assert ran == [] and not Hold.objects.exists()


def test_inside_an_outer_transaction_everything_commits_or_rolls_back_together(user):
    funded(user)
    with transaction.atomic(), metered(user, up_to=4, reason="x") as meter:
        meter.charge(2)
    assert ledger.get_balance(user) == 8
    with pytest.raises(LookupError), transaction.atomic():
        with metered(user, up_to=4, reason="x") as meter:
            meter.charge(2)
        raise LookupError("the caller's own failure after the block: the capture rolls back with it")
    assert ledger.get_balance(user) == 8
    assert Hold.objects.filter(status=Hold.Status.ACTIVE).count() == 0


def test_the_view_decorator_charges_what_the_view_reported(user):
    funded(user)

    @metered_view(5, reason="export")
    def export(request):
        request.meter.charge(int(request.POST["rows"]) // 100)
        return JsonResponse({"ok": True})

    @metered_view(5, reason="export")
    def failing(request):
        request.meter.charge(3)
        return JsonResponse({"error": "upstream"}, status=HTTPStatus.BAD_GATEWAY)

    request = RequestFactory().post("/export", {"rows": "250"})
    request.user = user
    assert export(request).status_code == HTTPStatus.OK
    assert ledger.get_balance(user) == 8
    assert failing(request).status_code == HTTPStatus.BAD_GATEWAY
    assert ledger.get_balance(user) == 8


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_slow_paid_view_does_not_block_the_same_users_other_spending(user):
    funded(user)
    started, finish = threading.Event(), threading.Event()

    @credits_required(2, reason="slow AI call")
    def slow(request):
        started.set()
        assert finish.wait(timeout=20), "the test never let the view finish"
        return HttpResponse("done")

    outcome = {}

    def request_in_thread():
        request = RequestFactory().post("/slow")
        request.user = user
        try:
            outcome["status"] = slow(request).status_code
        finally:
            connection.close()

    worker = threading.Thread(target=request_in_thread)
    worker.start()
    try:
        assert started.wait(timeout=20)
        # While the view runs, the same user spends elsewhere at once: no lock is held. A lock
        # wait would make this statement fail instead of queueing behind the slow view.
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '500ms'")
        try:
            ledger.spend_credits(user, 3, reason="elsewhere")
            assert ledger.get_balance(user) == 5  # 10 - 2 held - 3 spent
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = 0")
    finally:
        finish.set()
        worker.join(timeout=20)
    assert outcome["status"] == HTTPStatus.OK
    assert ledger.get_balance(user) == 5
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CAPTURE, reason="slow AI call").count() == 1


def _capture_in_child(hold_id: int) -> int | None:
    entry = ledger.capture_hold(Hold.objects.get(pk=hold_id), 3)
    return entry.pk if entry else None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_captures_of_one_hold_capture_once(user):
    funded(user)
    hold = ledger.hold_credits(user, 5, reason="x")
    entries = run_in_processes(_capture_in_child, [(hold.pk,)] * 8)
    assert len(set(entries)) == 1
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CAPTURE).count() == 1
    assert ledger.get_balance(user) == 7


def _mixed_in_child(user_id: int, seed: int) -> dict:
    import random

    from accounts.models import User
    from billing.exceptions import HoldEnded

    user = User.objects.get(pk=user_id)
    rng = random.Random(seed)
    done = {"held": 0, "captured": 0, "spent": 0, "refused": 0}
    for _ in range(40):
        try:
            if rng.random() < 0.3:
                ledger.spend_credits(user, rng.randint(1, 3), reason="spend")
                done["spent"] += 1
                continue
            hold = ledger.hold_credits(user, rng.randint(1, 4), reason="hold")
            done["held"] += 1
            if rng.random() < 0.6:
                ledger.capture_hold(hold, rng.randint(0, hold.amount))
                done["captured"] += 1
            else:
                ledger.release_hold(hold)
        except (InsufficientCredits, HoldEnded):
            done["refused"] += 1
    return done


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_processes_holding_capturing_releasing_and_spending_never_commit_more_than_the_balance(user):
    from billing.ledger.invariants import broken_profiles, grant_problems

    funded(user, 150)
    results = run_in_processes(_mixed_in_child, [(user.pk, seed) for seed in range(8)])
    assert sum(r["held"] + r["spent"] for r in results) > 0
    user.profile.refresh_from_db()
    assert user.profile.credits >= 0 and user.profile.held == 0
    assert not Hold.objects.filter(status=Hold.Status.ACTIVE).exists()  # every hold ended
    assert list(broken_profiles()) == [] and grant_problems() == []
    spent = -sum(LedgerEntry.objects.filter(delta__lt=0).values_list("delta", flat=True))
    assert spent == 150 - user.profile.credits
