"""Auto-recharge on PostgreSQL with real concurrency: eight processes spending at once below the
threshold start exactly one recharge, and a spend's recharge run by a real `db_worker` process
with the database task backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from django_tasks_db.models import DBTaskResult

from billing import autorecharge, cards, ledger
from billing.models import CreditPack, Payment
from tests.conftest import run_in_processes
from tests.stripe_helpers import VISA, card
from tests.workers import running_db_worker

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
AUTO = Payment.Purpose.AUTO_RECHARGE


@pytest.fixture(autouse=True)
def _fresh_armed_users():
    autorecharge.forget_armed()
    yield
    autorecharge.forget_armed()


def big_pack() -> CreditPack:
    # One recharge lifts the balance far above the threshold, so any second one would be a bug.
    return CreditPack.objects.create(slug="big", name="Big", credits=100, amount=1000, currency="usd")


def spend_one(user_id: int) -> str:
    ledger.spend_credits(get_user_model().objects.get(pk=user_id), 1, reason="api call")
    return "spent"


def test_eight_processes_spending_at_once_start_one_recharge(localstripe, user):
    cards.save_card(user, card(VISA))
    ledger.adjust_credits(user, 8, reason="top-up", actor=None)
    autorecharge.configure(user, enabled=True, pack=big_pack(), threshold=20, monthly_limit=31)
    # Each spend commits below the threshold and runs the recharge task (the immediate backend).
    assert run_in_processes(spend_one, [(user.pk,)] * 8) == ["spent"] * 8
    [payment] = Payment.objects.filter(user=user, purpose=AUTO)
    assert payment.status == Payment.Status.SUCCEEDED
    assert ledger.get_balance(user) == 100


def test_a_real_worker_runs_the_recharge_a_spend_enqueued(localstripe, user):
    cards.save_card(user, card(VISA))
    ledger.adjust_credits(user, 4, reason="top-up", actor=None)
    autorecharge.configure(user, enabled=True, pack="starter", threshold=3, monthly_limit=5)
    with override_settings(TASKS={"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}):
        ledger.spend_credits(user, 2, reason="api call")  # 2: below 3, enqueued on commit
    assert DBTaskResult.objects.filter(task_path="billing.tasks.auto_recharge_task").count() == 1
    assert not Payment.objects.filter(user=user, purpose=AUTO).exists()  # not in the spend's request

    done = DBTaskResult.objects.filter(task_path="billing.tasks.auto_recharge_task", finished_at__isnull=False)
    with running_db_worker(STRIPE_API_BASE=localstripe, STRIPE_MAX_NETWORK_RETRIES="0") as worker:
        worker.wait_for(done.exists, what="the recharge")
    output = worker.output
    assert Payment.objects.filter(user=user, purpose=AUTO).count() == 1, output
    assert ledger.get_balance(user) == 7
    [result] = DBTaskResult.objects.filter(task_path="billing.tasks.auto_recharge_task")
    assert result.return_value == autorecharge.Outcome.SUCCEEDED, output
