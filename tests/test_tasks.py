"""billing.tasks, billing.periodic and `manage.py billing_periodic`: with the suite's immediate
backend (a task runs where it is enqueued), and once with the project's database backend and a
real `db_worker` process."""

from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from django_tasks import TaskResultStatus

from billing import ledger, periodic
from billing.models import CreditGrant, Hold, IdempotentRequest, LedgerEntry, PeriodicJob, Profile
from billing.tasks import (
    clean_idempotent_requests_task,
    enqueue_on_commit,
    expire_credits_task,
    reconcile_payments_task,
)
from tests.test_grant_commands import let_expire
from tests.workers import running_db_worker

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


def expired_grant(user, amount=3):
    ledger.grant_credits(user, amount, reason="trial", expires_at=timezone.now() + timedelta(days=1))
    let_expire(CreditGrant.objects.get(profile__user=user, entry__reason="trial"))


def run(*args) -> str:
    out = StringIO()
    call_command("billing_periodic", *args, stdout=out)
    return out.getvalue()


# --- the tasks ---------------------------------------------------------------------------------


def test_expire_credits_task_expires_grants_and_holds_once(user):
    ledger.adjust_credits(user, 5, reason="top-up", actor=None)
    hold = ledger.hold_credits(user, 2, reason="job", expires_in=timedelta(minutes=1))
    expired_grant(user)
    past = timezone.now() - timedelta(seconds=1)  # as if its minute had passed
    Hold.objects.filter(pk=hold.pk).update(expires_at=past)
    Profile.objects.filter(user=user).update(next_hold_expiry=past)

    result = expire_credits_task.enqueue()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 3
    hold.refresh_from_db()
    assert hold.status == hold.Status.EXPIRED
    assert expire_credits_task.enqueue().return_value == 0  # a second run finds nothing left
    assert LedgerEntry.objects.filter(profile__user=user, kind=LedgerEntry.Kind.EXPIRY).count() == 1


def test_reconcile_payments_task_with_nothing_open_asks_nobody():
    result = reconcile_payments_task.enqueue()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == {}


def test_clean_idempotent_requests_keeps_recent_and_running_ones(user, make_user):
    ledger.adjust_credits(user, 10, reason="top-up", actor=None)
    old = timezone.now() - timedelta(hours=25)

    def request(key, *, status_code=None, hold=None, created_at=old):
        row = IdempotentRequest.objects.create(user=user, key=key, fingerprint="f", status_code=status_code, hold=hold)
        IdempotentRequest.objects.filter(pk=row.pk).update(created_at=created_at)
        return key

    running = ledger.hold_credits(user, 1, reason="running", expires_in=timedelta(days=2))
    released = ledger.release_hold(ledger.hold_credits(user, 1, reason="died"))
    keep = {
        request("recent-finished", status_code=200, created_at=timezone.now()),
        request("old-running", hold=running),
    }
    request("old-finished", status_code=200)
    request("old-died", hold=released)
    request("old-no-hold")

    assert clean_idempotent_requests_task.enqueue().return_value == 3
    assert set(IdempotentRequest.objects.values_list("key", flat=True)) == keep
    assert clean_idempotent_requests_task.enqueue().return_value == 0


def test_enqueue_on_commit_enqueues_nothing_when_the_transaction_rolls_back(user, django_capture_on_commit_callbacks):
    expired_grant(user)
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        enqueue_on_commit(expire_credits_task)
        raise RuntimeError("rolled back")
    assert callbacks == []
    assert ledger.get_balance(user) == 0 and not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.EXPIRY).exists()

    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        enqueue_on_commit(expire_credits_task)
        assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.EXPIRY).exists()  # not before the commit
    assert callbacks
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.EXPIRY).count() == 1


# --- the periodic command ----------------------------------------------------------------------


def test_billing_periodic_enqueues_each_job_once_per_period(user):
    expired_grant(user)
    out = run()
    assert "expire_credits: enqueued" in out and "reconcile_payments: enqueued" in out
    assert "clean_idempotent_requests: enqueued" in out and "cancel_abandoned_payments: enqueued" in out
    assert "clean_rate_limit_counters: enqueued" in out
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.EXPIRY).count() == 1  # the immediate backend ran it
    assert run().count("not due") == len(periodic.PERIODIC)  # again within the minute: nothing is due
    PeriodicJob.objects.update(last_enqueued_at=timezone.now() - timedelta(minutes=1))
    out = run()
    assert "expire_credits: enqueued" in out and "reconcile_payments: not due" in out
    assert run("--all").count("enqueued") == len(periodic.PERIODIC)


def test_billing_periodic_now_runs_the_jobs_in_its_own_process(user, settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}  # enqueue runs nothing
    expired_grant(user)
    assert "expire_credits: ran: 3" in run("--now")


def test_a_due_job_is_claimed_once():
    job = periodic.PERIODIC[0]
    now = timezone.now()
    assert periodic.claim(job, now=now) == periodic.NEVER
    assert periodic.claim(job, now=now) is None
    assert periodic.claim(job, now=now + job.every - periodic.EARLY) is not None


class Unreachable:
    """A task whose backend cannot be reached (a queue service that is down)."""

    def enqueue(self):
        raise ConnectionError("the queue is down")

    call = enqueue


FAILING = periodic.Job("failing", Unreachable(), timedelta(minutes=1))


def test_a_job_that_cannot_be_enqueued_is_due_again():
    failing = FAILING
    [outcome] = periodic.run(jobs=[failing])
    assert outcome.error == "ConnectionError: the queue is down"
    assert PeriodicJob.objects.get(name="failing").last_enqueued_at == periodic.NEVER
    [again] = periodic.run(jobs=[failing])
    assert again.claimed and again.error


def test_billing_periodic_exits_non_zero_when_a_job_fails(monkeypatch):
    jobs = (periodic.PERIODIC[0], FAILING)
    monkeypatch.setattr(periodic.run, "__kwdefaults__", {**periodic.run.__kwdefaults__, "jobs": jobs})
    err = StringIO()
    with pytest.raises(CommandError, match="1 job.*failing"):
        call_command("billing_periodic", stdout=StringIO(), stderr=err)
    assert "failing: FAILED" in err.getvalue()


# --- the database backend with a real worker ---------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_database_backend_and_a_real_worker_run_a_task(user):
    expired_grant(user)
    with override_settings(TASKS={"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}):
        result = expire_credits_task.enqueue()
        assert result.status == TaskResultStatus.READY
        with running_db_worker() as worker:

            def finished():
                result.refresh()
                return result.status not in (TaskResultStatus.READY, TaskResultStatus.RUNNING)

            worker.wait_for(finished)
        output = worker.output
        assert result.status == TaskResultStatus.SUCCESSFUL, output
        assert result.return_value == 3
        assert worker.returncode == 0, output  # SIGTERM between tasks: a clean stop
    assert ledger.get_balance(user) == 0
    assert LedgerEntry.objects.filter(profile__user=user, kind=LedgerEntry.Kind.EXPIRY).count() == 1
