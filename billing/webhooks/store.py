"""The event store: each Stripe event recorded once by its id, its handler run in the same
transaction as the record of what became of it (the package docstring tells the whole story)."""

from __future__ import annotations

import logging

from django.db import IntegrityError, connections, router, transaction
from django.db.models import F
from django.utils import timezone

from billing import fulfilment, stripe_gateway
from billing.exceptions import CreditingRefused, InvalidPaymentRequest
from billing.models import StripeEvent
from billing.webhooks.registry import CHARGE_WANTED, HANDLERS, Found, NoEffect, NotOurs

# The package's one logger, under the name projects' LOGGING settings already use.
logger = logging.getLogger("billing.webhooks")

Status = StripeEvent.Status
# Final: nothing moves an event out of these states, and a failure never overwrites them.
DONE = (Status.PROCESSED, Status.IGNORED)
# What a delivery of an already stored event is answered with at once, without running it:
# finished events, and held ones, which only staff run (from the admin).
SETTLED = (*DONE, Status.HELD)
MAX_ERROR_LENGTH = 4000
API_VERSION_LENGTH = StripeEvent._meta.get_field("api_version").max_length


def final_status(event_id: str) -> str | None:
    """The stored outcome ("processed", "ignored" or "held") of an event already settled, else None.

    A redelivery of a settled event is answered from this one indexed read, outside any
    transaction: no delivery moves an event out of those states (only staff run a held one), so
    the answer is the one the locking path in `receive_event` would give, without its
    transaction, failed insert and row lock. New, failed and in-flight events (None here) take
    that path. Plain SQL because this is the whole cost of a duplicate: the ORM's query building
    and model construction tripled it (docs/BENCHMARKS.md).
    """
    alias = router.db_for_write(StripeEvent)
    table = connections[alias].ops.quote_name(StripeEvent._meta.db_table)
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT status FROM {table} WHERE event_id = %s", [event_id])  # noqa: S608 - model table name
        row = cursor.fetchone()
    return row[0] if row is not None and row[0] in SETTLED else None


def receive_event(event: dict) -> tuple[StripeEvent, bool]:
    """Store a verified event once and do its work. Returns (the stored event, was a duplicate).

    An event rendered in another Stripe API version than the one this code is written for
    (`stripe_gateway.STRIPE_API_VERSION`) is stored as `held` and not applied: its objects may
    have another shape (a field renamed, a list no longer included), and reading them as ours
    could credit or claw back the wrong amount. It is answered 200 all the same, because
    redelivering it would not change its version: the whole payload is kept for staff to check
    and run from the admin, and the payment itself is settled meanwhile by `reconcile_payments`,
    which asks Stripe in the pinned version (docs/INSTALL.md, "Stripe API version").
    """
    try:
        held_because = version_mismatch(event)
        found = Found() if held_because else look_up(event)  # a held event is not worth a Stripe call
        with transaction.atomic(durable=True):
            record = _claim(event)
            if record.status in SETTLED:
                return record, True
            if held_because:
                _hold(record, held_because)
            else:
                run_handler(record, found)
            return record, False
    except Exception as exc:
        return _record_failure(event["id"], event["type"], event, exc), False


def reprocess_event(record: StripeEvent) -> tuple[StripeEvent, bool]:
    """Run a failed or held event's handler (staff, from the admin). Returns (event, whether it ran).

    A held event runs whatever its API version: staff checked its payload, which is the point
    of holding it. A processed or ignored one is left alone, so a double click or two staff
    members at once cannot apply anything twice (and the work is idempotent regardless).
    """
    try:
        found = look_up(record.payload)
        with transaction.atomic(durable=True):
            locked = StripeEvent.objects.select_for_update().get(pk=record.pk)
            if locked.status not in (Status.FAILED, Status.HELD):
                return locked, False
            run_handler(locked, found)
            return locked, True
    except Exception as exc:
        return _record_failure(record.event_id, record.type, record.payload, exc), True


def version_mismatch(event: dict) -> str:
    """Why the event is not in the pinned API version, or "" when it is.

    Stripe puts `api_version` on every event it sends (the webhook endpoint's version, else the
    account's default): a missing one is a mismatch too, never a guess.
    """
    version = event.get("api_version")
    if version == stripe_gateway.STRIPE_API_VERSION:
        return ""
    shown = version if isinstance(version, str) else repr(version)
    return f"API version {shown[:100]}, expected {stripe_gateway.STRIPE_API_VERSION}"


def api_version(event: dict) -> str:
    """The event's `api_version` as stored: "" when missing or too long for the column."""
    version = event.get("api_version")
    return version if isinstance(version, str) and len(version) <= API_VERSION_LENGTH else ""


def _claim(event: dict) -> StripeEvent:
    """Insert the event, or, when it is already stored, lock the stored row (inside the caller's transaction)."""
    try:
        with transaction.atomic():
            return StripeEvent.objects.create(
                event_id=event["id"], type=event["type"], api_version=api_version(event), payload=event
            )
    except IntegrityError:
        # Only `event_id` is unique: a delivery before this one committed it. The lock makes
        # concurrent retries of a failed event take turns.
        return StripeEvent.objects.select_for_update().get(event_id=event["id"])


def run_handler(record: StripeEvent, found: Found) -> None:
    """Run the event's handler and save its outcome (processed or ignored), in the caller's
    transaction; a failure propagates, for the caller to roll back and record."""
    record.status, record.error = dispatch(record.type, record.payload, found)
    record.attempts += 1
    _save_outcome(record)


def dispatch(event_type: str, payload: dict, found: Found) -> tuple[str, str]:
    """Run the handler registered for `event_type`; returns the outcome (status, why) to store.
    A failure propagates: the caller rolls the handler's work back and records it."""
    handler = HANDLERS.get(event_type)
    if handler is None:
        return Status.IGNORED, f"no handler for {event_type}"
    try:
        handler(payload["data"]["object"], found)
    except (NotOurs, NoEffect) as exc:
        return Status.IGNORED, str(exc)
    return Status.PROCESSED, ""


def _hold(record: StripeEvent, why: str) -> None:
    record.attempts += 1
    record.status, record.error = Status.HELD, why
    _save_outcome(record)


def _save_outcome(record: StripeEvent) -> None:
    record.processed_at = timezone.now()
    record.save(update_fields=["status", "error", "attempts", "processed_at"])


def _record_failure(event_id: str, event_type: str, payload: dict, exc: Exception) -> StripeEvent:
    """Store that the event failed, after its work was rolled back. A concurrent delivery that
    succeeded meanwhile wins: a processed event is never marked failed."""
    logger.exception("stripe event %s (%s) failed", event_id, event_type)
    error = error_text(exc)
    with transaction.atomic(durable=True):
        if isinstance(exc, CreditingRefused):
            flag_for_attention(exc)
        record, created = StripeEvent.objects.get_or_create(
            event_id=event_id,
            defaults={
                "type": event_type,
                "api_version": api_version(payload),
                "payload": payload,
                "status": Status.FAILED,
                "error": error,
                "attempts": 1,
            },
        )
        if not created:
            StripeEvent.objects.filter(pk=record.pk).exclude(status__in=DONE).update(
                status=Status.FAILED, error=error, attempts=F("attempts") + 1
            )
            record.refresh_from_db()
    return record


def error_text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]


def flag_for_attention(exc: CreditingRefused) -> None:
    """Keep the payment's flag for staff: it was written inside the event's work, which rolled back."""
    fulfilment.flag_for_attention(exc.payment_id, exc.why)


# --- asking Stripe what an event lacks, before its transaction -------------------------------


def look_up(event: dict) -> Found:
    """Ask Stripe for what the event lacks. Called outside any transaction (a slow Stripe must
    never hold our locks); raises StripeUnavailable when Stripe cannot be reached."""
    wants = CHARGE_WANTED.get(event["type"])
    charge_id = wants(event["data"]["object"]) if wants is not None else None
    if charge_id is None:
        return Found()
    try:
        return Found(charge=stripe_gateway.retrieve_charge(charge_id))
    except InvalidPaymentRequest as exc:
        # Our key cannot see it: not a charge of this Stripe account, so not one of ours.
        return Found(missing=f"Stripe does not know charge {charge_id}: {exc.user_message}")
