"""Stripe webhooks: verify the signature, record the event once, dispatch it by type.

`POST /billing/webhook/` answers 2xx only once the event's work has committed, so an answer of
200 means "done, never send it again" and anything else makes Stripe deliver it again later.

How each delivery is handled:

- The signature is checked on the raw body (Stripe's 300 s tolerance) by
  `stripe_gateway.construct_event`. A bad signature, a body that is not a JSON event, or an
  event without an id and a type is answered 400 and nothing is stored.
- The event is stored and its work done in ONE transaction: the `StripeEvent` insert (its unique
  `event_id` is the deduplication), the handler's ledger and payment writes, and the final
  status. A crash anywhere in between leaves nothing behind, and Stripe's retry starts afresh;
  there is never a "processed" row whose work is missing, nor work without its row.
- A second delivery of the same event collides on the unique `event_id`. It waits (PostgreSQL
  blocks the insert) until the first delivery's transaction ends, then: if that one committed
  as processed or ignored, the duplicate is answered 200 at once without touching anything; if
  the stored event had FAILED, the duplicate runs it again under the event's row lock (Stripe
  redelivers precisely because we failed), so concurrent retries take turns.
- A handler exception rolls all of its work back; the event is then stored (or updated) as
  `failed` with the error text in a separate transaction, and the answer is 500 so Stripe
  retries. Staff can also rerun failed events from the admin (`reprocess_event`).
- Unknown event types, and events about PaymentIntents this site did not create (no
  `metadata.payment_id` and no payment with that intent id), are stored as `ignored` and
  answered 200. An event whose metadata names a payment this database does not have is a
  `failed` event (500): it is ours but cannot be applied, which staff must see.

Every handler ends in `billing.fulfilment`, whose functions are idempotent and settle from
Stripe's cumulative amounts, so a retry, a duplicate or an out-of-order event is always safe.
Handlers trust the signed payload and make no Stripe calls.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from http import HTTPStatus

from django.db import IntegrityError, connections, router, transaction
from django.db.models import F
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing import fulfilment, stripe_gateway
from billing.models import Payment, StripeEvent

logger = logging.getLogger(__name__)

Status = StripeEvent.Status
DONE = (Status.PROCESSED, Status.IGNORED)
MAX_ERROR_LENGTH = 4000


class NotOurs(Exception):
    """The event concerns a Stripe object this site did not create: stored as ignored."""


class UnknownPayment(Exception):
    """The event names one of our payments that this database does not have: stored as failed."""


# --- the view -------------------------------------------------------------------------------


@csrf_exempt
@require_POST
@transaction.non_atomic_requests  # the 2xx must follow our own commit, never precede an outer one
def stripe_webhook(request):
    try:
        event = stripe_gateway.construct_event(request.body, request.headers.get("Stripe-Signature", ""))
    except stripe_gateway.WebhookSignatureError as exc:  # bad signature, stale timestamp, not JSON
        return _error(exc.user_message, HTTPStatus.BAD_REQUEST)
    except ValueError:  # belt and braces: a body that is not UTF-8 must never become a 500
        return _error("Invalid payload.", HTTPStatus.BAD_REQUEST)
    event = _plain(event)
    if _malformed(event):
        return _error("Invalid payload.", HTTPStatus.BAD_REQUEST)

    status = final_status(event["id"])
    if status is not None:
        return JsonResponse({"received": True, "status": status, "duplicate": True})
    record, duplicate = receive_event(event)
    if record.status == Status.FAILED:
        # The details are in the admin; Stripe only needs to know it should try again.
        return _error("Processing failed; it will be retried.", HTTPStatus.INTERNAL_SERVER_ERROR)
    return JsonResponse({"received": True, "status": record.status, "duplicate": duplicate})


def _error(message: str, status: HTTPStatus) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _plain(event) -> object:
    """The event as plain JSON data (the gateway may hand back a dict subclass)."""
    return json.loads(json.dumps(event)) if isinstance(event, dict) else event


def _malformed(event) -> bool:
    if not isinstance(event, dict) or not _storable(event):
        return True
    event_id, event_type, data = event.get("id"), event.get("type"), event.get("data")
    return not (
        isinstance(event_id, str)
        and 0 < len(event_id) <= StripeEvent._meta.get_field("event_id").max_length
        and isinstance(event_type, str)
        and 0 < len(event_type) <= StripeEvent._meta.get_field("type").max_length
        and isinstance(data, dict)
        and isinstance(data.get("object"), dict)
    )


def _storable(event: dict) -> bool:
    """PostgreSQL text and jsonb hold neither NUL characters nor lone surrogates, which JSON
    escapes can carry ("\\u0000", "\\ud800"), nor the NaN/Infinity that Python's JSON parser
    accepts; Stripe never sends them, so such a body is refused (400) rather than failing,
    unrecorded, inside the database. Iterative: the body may nest deep."""
    pending = [event]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, float) and not math.isfinite(value):
            return False
        elif isinstance(value, str):
            if "\x00" in value:
                return False
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


# --- storing and running events -------------------------------------------------------------


def final_status(event_id: str) -> str | None:
    """The stored outcome ("processed" or "ignored") of an event already finished, else None.

    A redelivery of a finished event is answered from this one indexed read, outside any
    transaction: those two states are final (nothing moves an event out of them), so the answer
    is the one the locking path in `receive_event` would give, without its transaction, failed
    insert and row lock. New, failed and in-flight events (None here) take that path. Plain SQL
    because this is the whole cost of a duplicate: the ORM's query building and model
    construction tripled it (docs/BENCHMARKS.md).
    """
    alias = router.db_for_write(StripeEvent)
    table = connections[alias].ops.quote_name(StripeEvent._meta.db_table)
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT status FROM {table} WHERE event_id = %s", [event_id])  # noqa: S608 - model table name
        row = cursor.fetchone()
    return row[0] if row is not None and row[0] in DONE else None


def receive_event(event: dict) -> tuple[StripeEvent, bool]:
    """Store a verified event once and do its work. Returns (the stored event, was a duplicate)."""
    try:
        with transaction.atomic(durable=True):
            record = _claim(event)
            if record.status in DONE:
                return record, True
            _run(record)
            return record, False
    except Exception as exc:
        return _record_failure(event["id"], event["type"], event, exc), False


def reprocess_event(record: StripeEvent) -> tuple[StripeEvent, bool]:
    """Run a failed event's handler again (staff, from the admin). Returns (event, whether it ran).

    Only failed events run: a processed or ignored one is left alone, so a double click or two
    staff members at once cannot apply anything twice (and the work is idempotent regardless).
    """
    try:
        with transaction.atomic(durable=True):
            locked = StripeEvent.objects.select_for_update().get(pk=record.pk)
            if locked.status != Status.FAILED:
                return locked, False
            _run(locked)
            return locked, True
    except Exception as exc:
        return _record_failure(record.event_id, record.type, record.payload, exc), True


def _claim(event: dict) -> StripeEvent:
    """Insert the event, or, when it is already stored, lock the stored row (inside the caller's transaction)."""
    try:
        with transaction.atomic():
            return StripeEvent.objects.create(event_id=event["id"], type=event["type"], payload=event)
    except IntegrityError:
        # Only `event_id` is unique: a delivery before this one committed it. The lock makes
        # concurrent retries of a failed event take turns.
        return StripeEvent.objects.select_for_update().get(event_id=event["id"])


def _run(record: StripeEvent) -> None:
    handler = HANDLERS.get(record.type)
    record.attempts += 1
    if handler is None:
        record.status, record.error = Status.IGNORED, f"no handler for {record.type}"
    else:
        try:
            handler(record.payload["data"]["object"])
        except NotOurs as exc:
            record.status, record.error = Status.IGNORED, str(exc)
        else:
            record.status, record.error = Status.PROCESSED, ""
    record.processed_at = timezone.now()
    record.save(update_fields=["status", "error", "attempts", "processed_at"])


def _record_failure(event_id: str, event_type: str, payload: dict, exc: Exception) -> StripeEvent:
    """Store that the event failed, after its work was rolled back. A concurrent delivery that
    succeeded meanwhile wins: a processed event is never marked failed."""
    logger.exception("stripe event %s (%s) failed", event_id, event_type)
    error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]
    with transaction.atomic(durable=True):
        record, created = StripeEvent.objects.get_or_create(
            event_id=event_id,
            defaults={"type": event_type, "payload": payload, "status": Status.FAILED, "error": error, "attempts": 1},
        )
        if not created:
            StripeEvent.objects.filter(pk=record.pk).exclude(status__in=DONE).update(
                status=Status.FAILED, error=error, attempts=F("attempts") + 1
            )
            record.refresh_from_db()
    return record


# --- handlers: one per event type, each ending in billing.fulfilment ------------------------


def _intent_succeeded(intent: dict) -> None:
    payment, intent_id = _payment_for_intent(intent)
    amount = intent.get("amount_received") or intent.get("amount")
    fulfilment.fulfil_payment(
        payment, intent_id=intent_id, amount=amount, currency=intent.get("currency"), source="webhook"
    )


def _intent_failed(intent: dict) -> None:
    payment, intent_id = _payment_for_intent(intent)
    error = intent.get("last_payment_error")
    message = error.get("message") if isinstance(error, dict) else None
    fulfilment.fail_payment(payment, message=message if isinstance(message, str) else "", intent_id=intent_id)


def _charge_refunded(charge: dict) -> None:
    payment = _payment_for_charge(charge)
    _check_currency(payment, charge.get("currency"))
    # Cumulative over all of the charge's refunds, so a repeat or a stale event changes nothing.
    fulfilment.record_refund(payment, amount_refunded=charge.get("amount_refunded"))


def _dispute_created(dispute: dict) -> None:
    charge = dispute.get("charge")
    intent_id = _id(dispute.get("payment_intent"))
    if intent_id is None and isinstance(charge, dict):
        intent_id = _id(charge.get("payment_intent"))
    if intent_id is None:
        # Disputes name their PaymentIntent on every API version since 2019; an unexpanded
        # charge id alone cannot be matched to a payment without asking Stripe.
        raise UnknownPayment(f"dispute {dispute.get('id')} names no payment_intent (charge {_id(charge)})")
    payment = _find_payment(intent_id=intent_id, metadata=dispute.get("metadata"))
    _check_currency(payment, dispute.get("currency"))
    fulfilment.record_dispute(payment, amount_disputed=dispute.get("amount"))


HANDLERS: dict[str, Callable[[dict], None]] = {
    "payment_intent.succeeded": _intent_succeeded,
    "payment_intent.payment_failed": _intent_failed,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute_created,
}


# --- finding our payment --------------------------------------------------------------------


def _payment_for_intent(intent: dict) -> tuple[Payment, str]:
    intent_id = _id(intent.get("id"))
    payment = _find_payment(intent_id=intent_id, metadata=intent.get("metadata"))
    if intent_id is None:  # found by metadata alone: nothing to check the event against
        raise fulfilment.PaymentMismatch(
            f"payment {payment.pk}: the event names no PaymentIntent id", "This payment does not match our records."
        )
    return payment, intent_id


def _payment_for_charge(charge: dict) -> Payment:
    return _find_payment(intent_id=_id(charge.get("payment_intent")), metadata=charge.get("metadata"))


def _find_payment(*, intent_id: str | None, metadata) -> Payment:
    """Our payment, by the id we put in the PaymentIntent's metadata, else by the intent id."""
    payment_id = _int_or_none(metadata.get("payment_id") if isinstance(metadata, dict) else None)
    payment = None
    if payment_id is not None:
        payment = Payment.objects.filter(pk=payment_id).first()
        reference = metadata.get("payment_ref")
        if payment is not None and isinstance(reference, str) and reference != payment.reference:
            # Same payment id, another installation (a second environment on this Stripe
            # account, or a database reset): Stripe sends every endpoint every event.
            raise NotOurs(f"PaymentIntent {intent_id} is for payment {reference} of another installation")
    if payment is None and intent_id:
        payment = Payment.objects.filter(stripe_payment_intent_id=intent_id).first()
    if payment is None:
        if payment_id is not None:
            raise UnknownPayment(f"metadata names payment {payment_id}, which is not in this database ({intent_id})")
        raise NotOurs(f"no payment for PaymentIntent {intent_id} (not created by this site)")
    if intent_id and payment.stripe_payment_intent_id and payment.stripe_payment_intent_id != intent_id:
        raise fulfilment.PaymentMismatch(
            f"payment {payment.pk} belongs to {payment.stripe_payment_intent_id}, the event names {intent_id}",
            "This payment does not match our records.",
        )
    return payment


def _check_currency(payment: Payment, currency) -> None:
    if not isinstance(currency, str) or currency.lower() != payment.currency:
        raise fulfilment.PaymentMismatch(
            f"payment {payment.pk} is in {payment.currency}, the event is in {currency!r}",
            "This payment does not match our records.",
        )


def _id(value) -> str | None:
    """A Stripe reference, whether it came as an id or as an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _int_or_none(value) -> int | None:
    """A positive database id, or None (metadata values are strings, and may be anything)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        return None
    return number if 0 < number < 2**63 else None
