"""Webhook events acknowledged at once and processed by a task worker (BILLING_WEBHOOKS_ASYNC).

The endpoint stores a verified event durably in ONE statement (`accept_event`: an insert that
does nothing when the event id is already stored, and tells which) and answers 200: Stripe's
part is done once the row has committed. The work (locking and fulfilling the payment,
crediting the ledger) runs in `process_webhook_events_task`, on a worker, in batches:

- `wake` enqueues at most one task per burst: the first new event claims a lease row
  (`PeriodicJob` "webhook_events", one conditional UPDATE after the event's own insert has
  committed) and enqueues a task; events stored while the lease is fresh (`LEASE`) enqueue
  nothing, because that task will find them. A long burst gets one more task per `LEASE`, so
  several workers share it.
- A task claims up to `BATCH` due events with `FOR UPDATE SKIP LOCKED` (two workers never take
  the same event), runs each one's handler in its own savepoint, records each outcome, and
  commits the batch: one commit for many events. It repeats until nothing is due, gives the
  lease back, and looks once more, so an event stored while it held the lease is never left.
- Events whose handler must first ask Stripe (a refund's charge) are run one by one: the Stripe
  call first, outside any transaction, then the event's own transaction.
- A handler that fails rolls back its savepoint only; the event becomes `failed` with its error,
  and is tried again with backoff (`RETRY_DELAYS`) until `MAX_ATTEMPTS`, after which only staff
  run it (the admin's reprocess action; the event list says so).
- `billing_periodic` runs the same task every minute (the sweeper): a stored event whose task
  was lost (the enqueue failed, the worker died mid-batch and its transaction rolled back) and
  failed events due for a retry are processed then.

Exactly once holds as in the synchronous path: the event id is unique, a payment is locked
before it is fulfilled, and every ledger write has its unique key, so a second run of an event
(a duplicate task, staff's reprocess racing a worker) changes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta

from django.db import connections, router, transaction
from django.db.models import F, Q
from django.utils import timezone
from django_tasks import task

from billing import notices, priorities
from billing.conf import app_settings
from billing.exceptions import CreditingRefused
from billing.ledger.postgresql import execute_prepared
from billing.models import PeriodicJob, StripeEvent
from billing.webhooks import store
from billing.webhooks.registry import CHARGE_WANTED, Found

logger = logging.getLogger("billing.webhooks")

Status = StripeEvent.Status
LEASE_JOB = "webhook_events"
# While a task was enqueued this recently, new events wait for it instead of enqueuing another.
LEASE = timedelta(seconds=0.5)
BATCH = 25  # events per transaction: bench/NOTES.md has the measurements behind it
# A task hands the worker back after this long (enqueuing its successor), so other tasks run too.
TASK_SECONDS = 30.0
# Waits before each retry of a failed event; after the last, staff decide (the admin).
RETRY_DELAYS = tuple(timedelta(seconds=s) for s in (30, 60, 120, 300, 900, 1800, 3600, 3 * 3600))
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
# Backends whose "enqueue" runs nothing later: work queued for them would only wait or vanish.
_NO_WORKER = ("django_tasks.backends.immediate.ImmediateBackend", "django_tasks.backends.dummy.DummyBackend")


def webhooks_async() -> bool:
    """BILLING_WEBHOOKS_ASYNC, or when it is None, whether TASKS' default backend has a worker."""
    configured = app_settings.BILLING_WEBHOOKS_ASYNC
    if configured is not None:
        return bool(configured)
    tasks = app_settings.TASKS
    backend = tasks.get("default", {}).get("BACKEND") if isinstance(tasks, dict) else None
    return backend is not None and backend not in _NO_WORKER


def _table(model) -> str:
    alias = router.db_for_write(model)
    return connections[alias].ops.quote_name(model._meta.db_table)


# --- the endpoint's part ----------------------------------------------------------------------


def accept_event(event: dict, body: bytes) -> tuple[str, bool]:
    """Store a verified event once, without running it. Returns (its status, was a duplicate).

    A new event is stored `received` (or `held`, in another API version: never run by itself)
    in one statement, committed when this returns; a task is then woken to run it. A delivery of
    an event already stored changes nothing, except that a failed one is made due at once:
    Stripe redelivers only what we did not acknowledge, so it is worth trying now.
    """
    held_because = store.version_mismatch(event)
    now = timezone.now()
    row = {
        "event_id": event["id"],
        "type": event["type"],
        "api_version": store.api_version(event),
        "status": Status.HELD if held_because else Status.RECEIVED,
        "error": held_because,
        "payload": _payload_text(event, body),
        "attempts": 1 if held_because else 0,
        "received_at": now,
        "processed_at": now if held_because else None,
    }
    alias = router.db_for_write(StripeEvent)
    connection = connections[alias]
    if connection.vendor == "postgresql":
        inserted, existing, leased, lease_exists = _insert_postgresql(alias, row, now)
    else:
        with connection.cursor() as cursor:
            (inserted, existing), leased, lease_exists = _insert_portable(cursor, row), False, False
    if inserted is not None:
        if inserted == Status.RECEIVED:
            if leased:  # the statement claimed the lease: this event's task is ours to enqueue
                _enqueue_task()
            elif not lease_exists:  # PostgreSQL's first event ever, or the portable path
                wake()
        return inserted, False
    if existing == Status.FAILED:
        StripeEvent.objects.filter(event_id=event["id"], status=Status.FAILED).update(next_attempt_at=now)
        wake(force=True)
    # None: a concurrent delivery stored it between our read and our insert; it is received.
    return existing or Status.RECEIVED, True


def _payload_text(event: dict, body: bytes) -> str:
    # The body Stripe signed is the event's JSON already: stored as sent, without re-encoding,
    # unless it is not plain UTF-8 JSON text (another encoding, a byte-order mark), which the
    # parser accepted but the database's JSON type would not.
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return json.dumps(event)
    return json.dumps(event) if text.startswith("\ufeff") else text


_COLUMNS = ("event_id", "type", "api_version", "status", "error", "payload", "attempts", "received_at", "processed_at")


def _insert_postgresql(alias: str, row: dict, now: datetime) -> tuple[str | None, str | None, bool, bool]:
    """One statement: the stored status if any, else the insert (ON CONFLICT DO NOTHING for a
    concurrent first delivery), and for a new event to run, the lease claimed if it is free (as
    `_claim_lease` does: an UPDATE that finds it taken writes nothing). Returns (status
    inserted, status already stored, lease claimed, lease row exists). Prepared once per
    connection, like the ledger's statements."""
    table, jobs = _table(StripeEvent), _table(PeriodicJob)
    values = ", ".join("%s::jsonb" if c == "payload" else "%s" for c in _COLUMNS)
    return execute_prepared(
        alias,
        f"""WITH existing AS (SELECT status FROM {table} WHERE event_id = %s),
        inserted AS (
            INSERT INTO {table} ({", ".join(_COLUMNS)})
            SELECT {values} WHERE NOT EXISTS (SELECT 1 FROM existing)
            ON CONFLICT (event_id) DO NOTHING
            RETURNING status
        ),
        leased AS (
            UPDATE {jobs} SET last_enqueued_at = %s
            WHERE name = %s AND last_enqueued_at < %s AND EXISTS (SELECT 1 FROM inserted WHERE status = %s)
            RETURNING 1
        )
        SELECT (SELECT status FROM inserted), (SELECT status FROM existing), EXISTS (SELECT 1 FROM leased),
            EXISTS (SELECT 1 FROM {jobs} WHERE name = %s)""",  # noqa: S608 - model table names
        [row["event_id"], *(row[c] for c in _COLUMNS), now, LEASE_JOB, now - LEASE, Status.RECEIVED, LEASE_JOB],
    )


def _insert_portable(cursor, row: dict) -> tuple[str | None, str | None]:
    table = _table(StripeEvent)
    cursor.execute(f"SELECT status FROM {table} WHERE event_id = %s", [row["event_id"]])  # noqa: S608
    found = cursor.fetchone()
    if found is not None:
        return None, found[0]
    cursor.execute(
        f"INSERT INTO {table} ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))}) "  # noqa: S608
        "ON CONFLICT (event_id) DO NOTHING RETURNING status",
        [row[c] for c in _COLUMNS],
    )
    inserted = cursor.fetchone()
    return (inserted[0], None) if inserted is not None else (None, None)


def wake(*, force: bool = False) -> None:
    """Enqueue a task to process received events, unless one was enqueued within `LEASE`
    (`force`: enqueue regardless). Never raises: the event is stored, and the sweeper
    (`billing_periodic`) processes it if no task does."""
    now = timezone.now()
    try:
        if not force and not _claim_lease(now):
            return
    except Exception:
        logger.exception("could not claim the webhook events lease; the next periodic run will process them")
        return
    _enqueue_task()


def _enqueue_task() -> None:
    try:
        priorities.prioritised(process_webhook_events_task, priorities.WEBHOOK_EVENTS).enqueue()
    except Exception:
        logger.exception("could not enqueue the webhook events task; the next periodic run will process them")


def _claim_lease(now: datetime) -> bool:
    """Claim the lease row if it is free: True when this call claimed it. One statement.

    On PostgreSQL an UPDATE whose snapshot finds the lease taken locks nothing and writes
    nothing, so the common case (a burst under one task) costs no row lock and no WAL flush, as
    an upsert would (ON CONFLICT DO UPDATE locks the row before testing its WHERE). The row is
    made by the first claim ever.
    """
    connection = connections[router.db_for_write(PeriodicJob)]
    table = _table(PeriodicJob)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"""WITH claimed AS (
                    UPDATE {table} SET last_enqueued_at = %s WHERE name = %s AND last_enqueued_at < %s RETURNING 1
                ), made AS (
                    INSERT INTO {table} (name, last_enqueued_at) SELECT %s, %s
                    WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE name = %s)
                    ON CONFLICT (name) DO NOTHING RETURNING 1
                )
                SELECT EXISTS (SELECT 1 FROM claimed) OR EXISTS (SELECT 1 FROM made)""",  # noqa: S608 - model table name
                [now, LEASE_JOB, now - LEASE, LEASE_JOB, now, LEASE_JOB],
            )
            return cursor.fetchone()[0]
        cursor.execute(
            f"INSERT INTO {table} AS j (name, last_enqueued_at) VALUES (%s, %s) "  # noqa: S608
            "ON CONFLICT (name) DO UPDATE SET last_enqueued_at = excluded.last_enqueued_at "
            "WHERE j.last_enqueued_at < %s RETURNING 1",
            [LEASE_JOB, now, now - LEASE],
        )
        return cursor.fetchone() is not None


def _release_lease() -> None:
    PeriodicJob.objects.filter(name=LEASE_JOB).update(last_enqueued_at=timezone.now() - 2 * LEASE)


# --- the worker's part ------------------------------------------------------------------------


def _due(now: datetime) -> Q:
    return Q(status=Status.RECEIVED) | Q(status=Status.FAILED, next_attempt_at__lte=now)


def process_due_events(*, batch: int = BATCH, seconds: float = TASK_SECONDS) -> dict[str, int]:
    """Process every due event (received, or failed and due for a retry). Returns counts by outcome."""
    counts: dict[str, int] = {}
    started = time.monotonic()
    while True:
        with notices.sent_together():  # the receipts of a batch: one task, not one per payment
            done = _run_batch(batch, counts) + _run_with_lookups(batch, counts)
        if done:
            if time.monotonic() - started > seconds:
                _release_lease()
                wake()  # a successor takes the rest; this worker gets to run other tasks
                return counts
            continue
        # Nothing due: give the lease back, then look once more. An event stored before the
        # release enqueued nothing (the lease was ours), so it must be visible to this look.
        _release_lease()
        if not _any_due_unclaimed():
            return counts


def _any_due_unclaimed() -> bool:
    """Whether a due event is left that no other task holds. Events another task has claimed
    (row-locked) are its to finish: counting them would make this task spin until it commits."""
    with transaction.atomic():
        due = StripeEvent.objects.select_for_update(skip_locked=True).filter(_due(timezone.now()))
        return bool(list(due.values_list("pk", flat=True)[:1]))


def _run_batch(size: int, counts: dict[str, int]) -> int:
    """Claim up to `size` due events that need nothing from Stripe and run them in one transaction."""
    with transaction.atomic(durable=True):
        records = list(
            StripeEvent.objects.select_for_update(skip_locked=True)
            .filter(_due(timezone.now()))
            .exclude(type__in=list(CHARGE_WANTED))
            .order_by("received_at", "id")
            .only("pk", "event_id", "type", "payload", "attempts")[:size]
        )
        processed = []
        for record in records:
            outcome = _run_one(record, Found(), counts)
            if outcome == (Status.PROCESSED, ""):
                processed.append(record.pk)
            elif outcome is not None:
                _save_outcome(record.pk, *outcome)
        if processed:  # the common outcome, stored for the whole batch in one statement
            _save_outcome(processed, Status.PROCESSED, "")
    return len(records)


def _save_outcome(pks, status: str, error: str) -> None:
    pks = pks if isinstance(pks, list) else [pks]
    StripeEvent.objects.filter(pk__in=pks).update(
        status=status, error=error, attempts=F("attempts") + 1, processed_at=timezone.now(), next_attempt_at=None
    )


def _run_with_lookups(size: int, counts: dict[str, int]) -> int:
    """Due events whose handler needs Stripe's word first: each asks Stripe outside any
    transaction, then runs in its own, if no other worker took it meanwhile."""
    candidates = list(
        StripeEvent.objects.filter(_due(timezone.now()), type__in=list(CHARGE_WANTED))
        .order_by("received_at", "id")
        .values_list("pk", "payload")[:size]
    )
    ran = 0
    for pk, payload in candidates:
        try:
            found = store.look_up(payload)
        except Exception as exc:  # Stripe unreachable: the event waits for its retry
            with transaction.atomic(durable=True):
                record = StripeEvent.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
                if record is not None and record.status in (Status.RECEIVED, Status.FAILED):
                    _record_failure(record, exc, counts)
                    ran += 1
            continue
        with transaction.atomic(durable=True):
            record = StripeEvent.objects.select_for_update(skip_locked=True).filter(_due(timezone.now()), pk=pk).first()
            if record is not None:
                outcome = _run_one(record, found, counts)
                if outcome is not None:
                    _save_outcome(record.pk, *outcome)
                ran += 1
    return ran


def _run_one(record: StripeEvent, found: Found, counts: dict[str, int]) -> tuple[str, str] | None:
    """Run one claimed event's handler inside the caller's transaction, in a savepoint, so a
    failure rolls back that event's work only and is recorded instead (returns None then);
    else returns the outcome (status, why) for the caller to store."""
    try:
        with transaction.atomic():
            outcome = store.dispatch(record.type, record.payload, found)
    except Exception as exc:
        _record_failure(record, exc, counts)
        return None
    counts[outcome[0]] = counts.get(outcome[0], 0) + 1
    return outcome


def _record_failure(record: StripeEvent, exc: Exception, counts: dict[str, int]) -> None:
    logger.exception("stripe event %s (%s) failed", record.event_id, record.type, exc_info=exc)
    if isinstance(exc, CreditingRefused):
        store.flag_for_attention(exc)
    attempts = record.attempts + 1
    retry_at = timezone.now() + RETRY_DELAYS[attempts - 1] if attempts < MAX_ATTEMPTS else None
    StripeEvent.objects.filter(pk=record.pk).exclude(status__in=store.DONE).update(
        status=Status.FAILED,
        error=store.error_text(exc),
        attempts=F("attempts") + 1,
        next_attempt_at=retry_at,
        processed_at=timezone.now(),
    )
    counts[Status.FAILED] = counts.get(Status.FAILED, 0) + 1


@task()
def process_webhook_events_task() -> dict[str, int]:
    """Process the stored webhook events that are due (billing.webhooks.queue); idempotent."""
    return process_due_events()
