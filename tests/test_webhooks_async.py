"""POST /billing/webhook/ with BILLING_WEBHOOKS_ASYNC: the event is stored and acknowledged, and a
task (billing.webhooks.queue) does its work. Events signed as Stripe signs them, delivered
through the test client; the task run by hand (the dummy backend enqueues nothing), by the
immediate backend, or by a real `db_worker` process."""

import json
import threading
import time
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.contrib.messages import get_messages
from django.db import connection, connections, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from billing import ledger, periodic
from billing.models import LedgerEntry, Payment, PeriodicJob, StripeEvent
from billing.tasks import process_webhook_events_task
from billing.webhooks import queue
from tests import stripe_events as events
from tests.conftest import is_postgres, run_in_processes
from tests.workers import running_db_worker

Kind = LedgerEntry.Kind
Status = StripeEvent.Status
DUMMY = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
DATABASE = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
IMMEDIATE = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}


@pytest.fixture
def no_worker(settings):
    """Async webhooks whose task never runs by itself: the tests run it (or the sweeper) by hand."""
    settings.BILLING_WEBHOOKS_ASYNC = True
    settings.TASKS = DUMMY
    return settings


def _entries(payment):
    return list(LedgerEntry.objects.filter(payment=payment).order_by("id").values_list("kind", "delta"))


def _stored(event) -> StripeEvent:
    return StripeEvent.objects.get(event_id=event["id"])


def _unknown_payment(user) -> tuple[Payment, dict]:
    """An event about payment 7777, which this database does not have (yet): its handler fails."""
    pack = events.make_payment(user).pack
    payment = Payment(pk=7777, user=user, pack=pack, credits=5, amount=500, currency="usd")
    payment.stripe_payment_intent_id = "pi_restored7777"
    return payment, events.intent_succeeded(payment)


def _make_due(event) -> None:
    StripeEvent.objects.filter(event_id=event["id"]).update(next_attempt_at=timezone.now() - timedelta(seconds=1))


@pytest.mark.parametrize(
    ("tasks", "configured", "expected"),
    [
        (None, None, False),
        (IMMEDIATE, None, False),
        (DUMMY, None, False),
        (DATABASE, None, True),
        (IMMEDIATE, True, True),
        (DATABASE, False, False),
    ],
)
def test_async_by_default_only_when_a_worker_runs_the_tasks(settings, tasks, configured, expected):
    if tasks is None:
        del settings.TASKS
    else:
        settings.TASKS = tasks
    settings.BILLING_WEBHOOKS_ASYNC = configured
    assert queue.webhooks_async() is expected


def test_a_new_event_is_stored_and_acknowledged_and_the_task_credits_it(client, no_worker, user):
    payment = events.make_payment(user)
    event = events.intent_succeeded(payment)

    with CaptureQueriesContext(connection) as queries:
        response = events.post(client, event)

    assert response.status_code == HTTPStatus.OK
    assert response.json() == {"received": True, "status": "received", "duplicate": False}
    if is_postgres():  # the store (one statement), and for the first event ever the lease's row made
        assert len(queries) == 2, [q["sql"] for q in queries]
    stored = _stored(event)
    assert (stored.status, stored.attempts, stored.payload) == (Status.RECEIVED, 0, event)
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING
    assert ledger.get_balance(user) == 0

    assert process_webhook_events_task.call() == {"processed": 1}

    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    assert _entries(payment) == [(Kind.PURCHASE, 5)]
    assert (_stored(event).status, _stored(event).attempts) == (Status.PROCESSED, 1)


@pytest.mark.postgres
def test_a_new_event_or_a_redelivery_is_one_statement_on_postgresql(client, no_worker, user):
    from django_tasks import default_task_backend

    events.post(client, events.intent_succeeded(events.make_payment(user)))  # the lease's row is made
    default_task_backend.clear()
    PeriodicJob.objects.filter(name=queue.LEASE_JOB).update(last_enqueued_at=timezone.now() - 2 * queue.LEASE)
    for enqueued in (1, 1):  # the first claims the free lease and enqueues; the second finds it held
        event = events.intent_succeeded(events.make_payment(user))
        with CaptureQueriesContext(connection) as queries:
            assert events.post(client, event).json()["status"] == "received"
        assert len(queries) == 1, [q["sql"] for q in queries]
        assert len(default_task_backend.results) == enqueued  # one task for the burst
    with CaptureQueriesContext(connection) as queries:
        assert events.post(client, event).json() == {"received": True, "status": "received", "duplicate": True}
    assert len(queries) == 1, [q["sql"] for q in queries]


def test_with_the_immediate_backend_the_task_runs_before_the_answer(client, settings, user):
    settings.BILLING_WEBHOOKS_ASYNC = True
    settings.TASKS = IMMEDIATE
    payment = events.make_payment(user)

    response = events.post(client, events.intent_succeeded(payment))

    assert response.status_code == HTTPStatus.OK
    assert ledger.get_balance(user) == 5


def test_a_burst_wakes_one_task(client, settings, user):
    settings.BILLING_WEBHOOKS_ASYNC = True
    settings.TASKS = DATABASE
    for _ in range(5):
        assert events.post(client, events.intent_succeeded(events.make_payment(user))).status_code == HTTPStatus.OK
    assert DBTaskResult.objects.count() == 1
    assert PeriodicJob.objects.filter(name=queue.LEASE_JOB).exists()

    assert process_webhook_events_task.call() == {"processed": 5}
    assert ledger.get_balance(user) == 25
    # The task gave its lease back: the next event wakes a task at once.
    events.post(client, events.intent_succeeded(events.make_payment(user)))
    assert DBTaskResult.objects.count() == 2


def test_a_duplicate_while_the_first_is_still_received_credits_once(client, no_worker, user):
    payment = events.make_payment(user)
    event = events.intent_succeeded(payment)
    assert events.post(client, event).json()["duplicate"] is False

    again = events.post(client, event)

    assert again.status_code == HTTPStatus.OK
    assert again.json() == {"received": True, "status": "received", "duplicate": True}
    assert StripeEvent.objects.count() == 1
    assert process_webhook_events_task.call() == {"processed": 1}
    assert process_webhook_events_task.call() == {}  # nothing left: a second task changes nothing
    assert events.post(client, event).json() == {"received": True, "status": "processed", "duplicate": True}
    assert _entries(payment) == [(Kind.PURCHASE, 5)]
    assert ledger.get_balance(user) == 5


def test_an_event_whose_task_was_lost_is_processed_by_the_periodic_sweep(client, no_worker, user):
    payment = events.make_payment(user)
    event = events.intent_succeeded(payment)
    events.post(client, event)  # the dummy backend drops the task, as a lost enqueue would
    [job] = [job for job in periodic.PERIODIC if job.task is process_webhook_events_task]

    [outcome] = periodic.run(now_in_process=True, jobs=[job])

    assert outcome.error == ""
    assert outcome.result == {"processed": 1}
    assert _stored(event).status == Status.PROCESSED
    assert _entries(payment) == [(Kind.PURCHASE, 5)]


def test_a_failing_event_is_retried_with_backoff_then_left_to_staff(client, no_worker, user, admin_client):
    payment, event = _unknown_payment(user)
    assert events.post(client, event).status_code == HTTPStatus.OK  # stored: Stripe's part is done

    before = timezone.now()
    assert process_webhook_events_task.call() == {"failed": 1}
    stored = _stored(event)
    assert (stored.status, stored.attempts) == (Status.FAILED, 1)
    assert "7777" in stored.error
    assert stored.next_attempt_at >= before + queue.RETRY_DELAYS[0]
    assert process_webhook_events_task.call() == {}  # not due yet

    delays = []
    for _ in range(queue.MAX_ATTEMPTS - 1):
        _make_due(event)
        moment = timezone.now()
        assert process_webhook_events_task.call() == {"failed": 1}
        stored = _stored(event)
        if stored.next_attempt_at is not None:
            delays.append(stored.next_attempt_at - moment)
    assert stored.attempts == queue.MAX_ATTEMPTS
    assert stored.next_attempt_at is None  # no more retries by itself
    assert delays == sorted(delays) and delays[-1] > delays[0]  # the waits grow
    assert process_webhook_events_task.call() == {}

    response = admin_client.get("/admin/billing/stripeevent/")
    assert any("will not be retried" in str(m) for m in get_messages(response.wsgi_request))

    # Staff restore the payment and run the event from the admin: credited once.
    payment.save(force_insert=True)
    admin_client.post("/admin/billing/stripeevent/", {"action": "reprocess", "_selected_action": [stored.pk]})
    assert _stored(event).status == Status.PROCESSED
    assert _entries(payment) == [(Kind.PURCHASE, 5)]


def test_a_failed_event_succeeds_on_its_retry(client, no_worker, user):
    payment, event = _unknown_payment(user)
    events.post(client, event)
    assert process_webhook_events_task.call() == {"failed": 1}
    payment.save(force_insert=True)

    _make_due(event)
    assert process_webhook_events_task.call() == {"processed": 1}

    assert (_stored(event).status, _stored(event).attempts) == (Status.PROCESSED, 2)
    assert _entries(payment) == [(Kind.PURCHASE, 5)]


def test_a_redelivery_of_a_failed_event_makes_it_due_at_once(client, no_worker, user):
    payment, event = _unknown_payment(user)
    events.post(client, event)
    process_webhook_events_task.call()
    payment.save(force_insert=True)

    response = events.post(client, event)

    assert response.json() == {"received": True, "status": "failed", "duplicate": True}
    assert process_webhook_events_task.call() == {"processed": 1}
    assert _entries(payment) == [(Kind.PURCHASE, 5)]


def test_one_failing_event_does_not_undo_the_others_in_its_batch(client, no_worker, user):
    good = [events.make_payment(user) for _ in range(3)]
    _, bad_event = _unknown_payment(user)
    events.post(client, events.intent_succeeded(good[0]))
    events.post(client, bad_event)
    for payment in good[1:]:
        events.post(client, events.intent_succeeded(payment))

    assert process_webhook_events_task.call() == {"processed": 3, "failed": 1}

    assert ledger.get_balance(user) == 15
    assert _stored(bad_event).status == Status.FAILED


def test_events_whose_handler_asks_stripe_first_run_one_by_one_on_the_worker(client, no_worker, user):
    payment = events.make_payment(user)
    events.post(client, events.intent_succeeded(payment))
    refund = events.charge_refunded(payment, refunds=[500])
    events.post(client, refund)  # charge.refunded: its handler may need the charge from Stripe

    assert process_webhook_events_task.call() == {"processed": 2}

    assert _stored(refund).status == Status.PROCESSED
    assert _entries(payment) == [(Kind.PURCHASE, 5), (Kind.REFUND, -5)]
    assert ledger.get_balance(user) == 0


def test_other_api_versions_are_held_and_no_task_runs_them(client, no_worker, user):
    payment = events.make_payment(user)
    event = events.intent_succeeded(payment)
    event["api_version"] = "2020-08-27"

    response = events.post(client, event)

    assert response.json() == {"received": True, "status": "held", "duplicate": False}
    assert process_webhook_events_task.call() == {}
    assert _stored(event).status == Status.HELD
    assert ledger.get_balance(user) == 0


@pytest.mark.parametrize("body", [b"{}", b"not json", b'{"id": "evt_1", "type": "x", "data": {}}'])
def test_malformed_events_are_refused_and_nothing_stored(client, no_worker, db, body):
    response = events.post(client, body)
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert not StripeEvent.objects.exists()


def test_a_body_with_a_byte_order_mark_is_stored_as_json(client, no_worker, user):
    """Python's JSON parser skips a UTF-8 byte-order mark; the database's JSON type would refuse
    the text with it, so the event is stored re-encoded, never answered 5xx."""
    event = events.intent_succeeded(events.make_payment(user))
    response = events.post(client, b"\xef\xbb\xbf" + json.dumps(event).encode())
    assert response.status_code == HTTPStatus.OK, response.content
    assert _stored(event).payload == event


def test_a_bad_signature_is_refused(client, no_worker, user):
    response = events.post(client, events.intent_succeeded(events.make_payment(user)), secret="whsec_other")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json() == {"error": "Invalid signature."}
    assert not StripeEvent.objects.exists()


def _deliver(body: bytes, header: str) -> tuple[int, bool | None]:
    response = Client().post(
        events.WEBHOOK_URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )
    return response.status_code, response.json().get("duplicate")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_processes_posting_the_same_event_with_workers_credit_once(settings, make_user):
    settings.BILLING_WEBHOOKS_ASYNC = True
    settings.TASKS = DATABASE
    user = make_user()
    payment = events.make_payment(user)
    event = events.intent_succeeded(payment)
    body = events.body_of(event)
    header = events.sign(body)
    done = StripeEvent.objects.filter(event_id=event["id"], status=Status.PROCESSED)

    with running_db_worker() as first, running_db_worker() as second:
        answers = run_in_processes(_deliver, [(body, header)] * 8)
        first.wait_for(done.exists, what="the event")
        second.wait_for(lambda: not DBTaskResult.objects.filter(finished_at__isnull=True).exists(), what="the tasks")

    assert sorted(answers) == [(HTTPStatus.OK, False)] + [(HTTPStatus.OK, True)] * 7
    assert (_stored(event).status, _stored(event).attempts) == (Status.PROCESSED, 1)
    assert _entries(payment) == [(Kind.PURCHASE, 5)]
    assert ledger.get_balance(user) == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_task_leaves_events_another_task_holds_and_ends(settings, make_user):
    """Events another worker has claimed (row-locked, mid-batch) are its own: a second task
    neither runs them nor waits for them, it ends."""
    settings.BILLING_WEBHOOKS_ASYNC = True
    settings.TASKS = DUMMY
    user = make_user()
    event = events.intent_succeeded(events.make_payment(user))
    events.post(Client(), event)
    claimed, finished = threading.Event(), threading.Event()

    def other_worker():
        try:
            with transaction.atomic():
                StripeEvent.objects.select_for_update().get(event_id=event["id"])
                claimed.set()
                finished.wait(timeout=30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert claimed.wait(timeout=10)
        started = time.monotonic()
        assert process_webhook_events_task.call() == {}
        assert time.monotonic() - started < 5
    finally:
        finished.set()
        thread.join(timeout=30)
    assert _stored(event).status == Status.RECEIVED  # still there for the next task or the sweep
    assert process_webhook_events_task.call() == {"processed": 1}


@pytest.mark.django_db(transaction=True)  # the batch commits for real, as on a worker
def test_a_batch_of_events_sends_its_receipts_through_one_task(client, no_worker, user, settings):
    from django_tasks import default_task_backend

    settings.BILLING_RECEIPT_EMAILS = True
    payments = [events.make_payment(user) for _ in range(3)]
    for payment in payments:
        events.post(client, events.intent_succeeded(payment))
    default_task_backend.clear()

    assert process_webhook_events_task.call() == {"processed": 3}

    [receipts] = [r for r in default_task_backend.results if r.task.name == "send_payment_notices_task"]
    assert sorted(receipts.args[0]) == sorted(p.pk for p in payments)
    # Money before mail: a busy worker credits Stripe's events before it sends emails.
    assert receipts.task.priority < 0


def test_the_events_task_goes_before_other_work(client, no_worker, user):
    from django_tasks import default_task_backend

    default_task_backend.clear()
    events.post(client, events.intent_succeeded(events.make_payment(user)))
    [enqueued] = default_task_backend.results
    assert (enqueued.task.name, enqueued.task.priority) == ("process_webhook_events_task", 10)
