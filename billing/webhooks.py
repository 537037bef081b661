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
- Unknown event types, and events about things this site did not create, are stored as
  `ignored` (with the reason) and answered 200, so Stripe stops sending them: a PaymentIntent
  with no payment here (no `metadata.payment_id` and no payment with that intent id) or whose
  metadata names another installation's payment or another user, and a charge made without a
  PaymentIntent (the Charges API, as the original Node app and other systems on the same
  Stripe account use it). So are events that move no money: dispute inquiries (`warning_*`)
  and refunds that have not failed. An event whose metadata names a payment this database
  does not have, or that contradicts what we recorded for our own intent, is a `failed` event
  (500): it is ours but cannot be applied, which staff must see.
- What an event lacks but Stripe can tell (the PaymentIntent behind a dispute's charge, the
  full list of a charge's refunds) is asked of Stripe before the event's transaction starts:
  no Stripe call runs inside one. When Stripe cannot be reached the event fails (500), and
  Stripe's redelivery tries again.

Every handler ends in `billing.fulfilment`, whose functions are idempotent and settle from
Stripe's cumulative amounts, so a retry, a duplicate or an out-of-order event is always safe.
Money Stripe returns (a refund that failed, a dispute the merchant won) gives the credits back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from django.core.exceptions import RequestDataTooBig
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


class NoEffect(Exception):
    """The event moves no money (a dispute inquiry, a refund that has not failed): stored as ignored."""


# --- the view -------------------------------------------------------------------------------


@csrf_exempt
@require_POST
@transaction.non_atomic_requests  # the 2xx must follow our own commit, never precede an outer one
def stripe_webhook(request):
    try:
        body = request.body
    except RequestDataTooBig:  # over DATA_UPLOAD_MAX_MEMORY_SIZE: Django's own answer would be an HTML page
        return _error("Payload too large.", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    try:
        event = stripe_gateway.construct_event(body, request.headers.get("Stripe-Signature", ""))
    except stripe_gateway.WebhookSignatureError as exc:  # bad signature, stale timestamp, not JSON
        return _error(exc.user_message, HTTPStatus.BAD_REQUEST)
    except ValueError:  # belt and braces: a body that is not UTF-8 must never become a 500
        return _error("Invalid payload.", HTTPStatus.BAD_REQUEST)
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


def _malformed(event) -> bool:
    if not isinstance(event, dict):
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
        found = look_up(event)
        with transaction.atomic(durable=True):
            record = _claim(event)
            if record.status in DONE:
                return record, True
            _run(record, found)
            return record, False
    except Exception as exc:
        return _record_failure(event["id"], event["type"], event, exc), False


def reprocess_event(record: StripeEvent) -> tuple[StripeEvent, bool]:
    """Run a failed event's handler again (staff, from the admin). Returns (event, whether it ran).

    Only failed events run: a processed or ignored one is left alone, so a double click or two
    staff members at once cannot apply anything twice (and the work is idempotent regardless).
    """
    try:
        found = look_up(record.payload)
        with transaction.atomic(durable=True):
            locked = StripeEvent.objects.select_for_update().get(pk=record.pk)
            if locked.status != Status.FAILED:
                return locked, False
            _run(locked, found)
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


def _run(record: StripeEvent, found: Found) -> None:
    handler = HANDLERS.get(record.type)
    record.attempts += 1
    if handler is None:
        record.status, record.error = Status.IGNORED, f"no handler for {record.type}"
    else:
        try:
            handler(record.payload["data"]["object"], found)
        except (NotOurs, NoEffect) as exc:
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
        if isinstance(exc, fulfilment.CreditingRefused):
            # The flag was written inside the event's transaction, which rolled back: keep it.
            fulfilment.flag_for_attention(exc.payment_id, exc.why)
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


# --- asking Stripe what an event lacks, before its transaction -------------------------------


@dataclass(frozen=True)
class Found:
    """What Stripe said about the event's charge, when the event needed asking."""

    charge: stripe_gateway.Charge | None = None
    missing: str = ""  # why there is no charge: Stripe does not know it


def look_up(event: dict) -> Found:
    """Ask Stripe for what the event lacks. Called outside any transaction (a slow Stripe must
    never hold our locks); raises StripeUnavailable when Stripe cannot be reached."""
    wants = CHARGE_WANTED.get(event["type"])
    charge_id = wants(event["data"]["object"]) if wants is not None else None
    if charge_id is None:
        return Found()
    try:
        return Found(charge=stripe_gateway.retrieve_charge(charge_id))
    except stripe_gateway.InvalidPaymentRequest as exc:
        # Our key cannot see it: not a charge of this Stripe account, so not one of ours.
        return Found(missing=f"Stripe does not know charge {charge_id}: {exc.user_message}")


def _dispute_wants_charge(dispute: dict) -> str | None:
    # Disputes name their PaymentIntent, except on charges made without one (the Charges API):
    # only the charge can tell, and one that has none is not ours.
    if _is_inquiry(dispute) or _dispute_intent(dispute) is not None:
        return None
    return _charge_id(dispute.get("charge"))


def _refunded_charge_wants_refunds(charge: dict) -> str | None:
    # Since API version 2022-11-15 a charge no longer lists its refunds; without the list a
    # failed refund cannot be told from one still standing.
    if _id(charge.get("payment_intent")) is None or _listed_refunds(charge) is not None:
        return None
    return _charge_id(charge.get("id"))


def _failed_refund_wants_charge(refund: dict) -> str | None:
    return _charge_id(refund.get("charge")) if refund.get("status") in REFUND_UNDONE else None


# --- handlers: one per event type, each ending in billing.fulfilment ------------------------


def _intent_succeeded(intent: dict, found: Found) -> None:
    payment, intent_id = _payment_for_intent(intent)
    amount = intent.get("amount_received") or intent.get("amount")
    fulfilment.fulfil_payment(
        payment, intent_id=intent_id, amount=amount, currency=intent.get("currency"), source="webhook"
    )


def _intent_failed(intent: dict, found: Found) -> None:
    payment, intent_id = _payment_for_intent(intent)
    error = intent.get("last_payment_error")
    message = error.get("message") if isinstance(error, dict) else None
    fulfilment.fail_payment(payment, message=message if isinstance(message, str) else "", intent_id=intent_id)


def _charge_refunded(charge: dict, found: Found) -> None:
    intent_id = _id(charge.get("payment_intent"))
    if intent_id is None:
        raise NotOurs(f"charge {_id(charge.get('id'))} was not made through a PaymentIntent (not created by this site)")
    payment = _find_payment(intent_id=intent_id, metadata=charge.get("metadata"))
    _check_currency(payment, charge.get("currency"))
    refunds = _listed_refunds(charge)
    if refunds is None and found.charge is not None:
        refunds = _refunds_of(found.charge)
    if refunds is None:  # Stripe does not show the charge: its cumulative figure is a safe lower bound
        fulfilment.record_refund(payment, amount_refunded=charge.get("amount_refunded"))
        return
    # Cumulative over all of the charge's refunds, so a repeat or a stale event changes nothing.
    fulfilment.record_refund(payment, **_refund_totals(refunds))


def _refund_updated(refund: dict, found: Found) -> None:
    """charge.refund.updated, refund.updated, refund.failed: a refund that failed or was canceled
    returns the money to us, so the credits its clawback took come back."""
    refund_id, status, amount = refund.get("id"), refund.get("status"), refund.get("amount")
    if status not in REFUND_UNDONE:
        raise NoEffect(f"refund {refund_id} is {status}: only a failed or canceled refund changes the credits")
    if found.charge is None:
        raise NotOurs(found.missing or f"refund {refund_id} names no charge")
    intent_id = _id(refund.get("payment_intent")) or found.charge.payment_intent
    if intent_id is None:
        raise NotOurs(f"charge {found.charge.id} was not made through a PaymentIntent (not created by this site)")
    payment = _find_payment(intent_id=intent_id, metadata=refund.get("metadata"))
    _check_currency(payment, refund.get("currency"))
    refunds = _refunds_of(found.charge)
    if not isinstance(refund_id, str) or not _is_amount(amount):
        raise fulfilment.PaymentMismatch(
            f"payment {payment.pk}: refund {refund_id!r} of {amount!r} is not a refund", "This refund is malformed."
        )
    refunds[refund_id] = (amount, status)  # the event's own word: a failed refund stays failed
    fulfilment.record_refund(payment, **_refund_totals(refunds))


def _dispute_opened(dispute: dict, found: Found) -> None:
    """charge.dispute.created, charge.dispute.funds_withdrawn: Stripe took the money back."""
    _refuse_inquiry(dispute)
    fulfilment.record_dispute(_payment_for_dispute(dispute, found), amount_disputed=dispute.get("amount"))


def _dispute_closed(dispute: dict, found: Found) -> None:
    """Won: Stripe returns the money, and the credits come back. Lost: the money stays withdrawn,
    which the clawback already reflects (applied here too, should the opening event be missing)."""
    _refuse_inquiry(dispute)
    payment = _payment_for_dispute(dispute, found)
    if dispute.get("status") == "won":
        fulfilment.record_dispute_reinstated(payment, amount_disputed=dispute.get("amount"))
    else:
        fulfilment.record_dispute(payment, amount_disputed=dispute.get("amount"))


def _dispute_funds_reinstated(dispute: dict, found: Found) -> None:
    _refuse_inquiry(dispute)
    fulfilment.record_dispute_reinstated(_payment_for_dispute(dispute, found), amount_disputed=dispute.get("amount"))


HANDLERS: dict[str, Callable[[dict, Found], None]] = {
    "payment_intent.succeeded": _intent_succeeded,
    "payment_intent.payment_failed": _intent_failed,
    "charge.refunded": _charge_refunded,
    "charge.refund.updated": _refund_updated,
    "refund.updated": _refund_updated,
    "refund.failed": _refund_updated,
    "charge.dispute.created": _dispute_opened,
    "charge.dispute.funds_withdrawn": _dispute_opened,
    "charge.dispute.closed": _dispute_closed,
    "charge.dispute.funds_reinstated": _dispute_funds_reinstated,
}

DISPUTE_EVENTS = [name for name in HANDLERS if name.startswith("charge.dispute.")]
CHARGE_WANTED: dict[str, Callable[[dict], str | None]] = {
    **dict.fromkeys(DISPUTE_EVENTS, _dispute_wants_charge),
    "charge.refunded": _refunded_charge_wants_refunds,
    "charge.refund.updated": _failed_refund_wants_charge,
    "refund.updated": _failed_refund_wants_charge,
    "refund.failed": _failed_refund_wants_charge,
}

# A refund in one of these states returned the money to us; it never changes state again.
REFUND_UNDONE = ("failed", "canceled")
# Inquiries: the bank asks questions before any chargeback; no money moves.
INQUIRY = ("warning_needs_response", "warning_under_review", "warning_closed")


# --- refunds and disputes: reading Stripe's objects -----------------------------------------


def _listed_refunds(charge: dict) -> dict[str, tuple[int, str]] | None:
    """The charge's refunds (id -> amount, status) when the charge lists all of them, else None."""
    listing = charge.get("refunds")
    if not isinstance(listing, dict) or listing.get("has_more") is not False:
        return None
    items = listing.get("data")
    if not isinstance(items, list):
        return None
    refunds = {}
    for item in items:
        if not isinstance(item, dict):
            return None
        refund_id, amount, status = item.get("id"), item.get("amount"), item.get("status")
        if not (isinstance(refund_id, str) and _is_amount(amount) and isinstance(status, str)):
            return None
        refunds[refund_id] = (amount, status)
    return refunds


def _refunds_of(charge: stripe_gateway.Charge) -> dict[str, tuple[int, str]]:
    return {refund.id: (refund.amount, refund.status) for refund in charge.refunds}


def _refund_totals(refunds: dict[str, tuple[int, str]]) -> dict[str, int]:
    """Every refund ever made on the charge, and those of them that failed or were canceled."""
    return {
        "amount_refunded": sum(amount for amount, _ in refunds.values()),
        "amount_failed": sum(amount for amount, status in refunds.values() if status in REFUND_UNDONE),
    }


def _is_inquiry(dispute: dict) -> bool:
    return dispute.get("status") in INQUIRY


def _refuse_inquiry(dispute: dict) -> None:
    if _is_inquiry(dispute):
        # Nothing was withdrawn, so nothing is clawed back, and staff may still refund.
        raise NoEffect(f"dispute {dispute.get('id')} is an inquiry ({dispute.get('status')}): no money moved")


def _dispute_intent(dispute: dict) -> str | None:
    intent_id = _id(dispute.get("payment_intent"))
    charge = dispute.get("charge")
    if intent_id is None and isinstance(charge, dict):
        intent_id = _id(charge.get("payment_intent"))
    return intent_id


def _payment_for_dispute(dispute: dict, found: Found) -> Payment:
    intent_id = _dispute_intent(dispute)
    if intent_id is None:
        if found.charge is None:
            raise NotOurs(found.missing or f"dispute {dispute.get('id')} names no PaymentIntent and no charge")
        intent_id = found.charge.payment_intent
        if intent_id is None:
            raise NotOurs(
                f"dispute {dispute.get('id')} is on charge {found.charge.id}, made without a PaymentIntent "
                "(not created by this site)"
            )
    payment = _find_payment(intent_id=intent_id, metadata=dispute.get("metadata"))
    _check_currency(payment, dispute.get("currency"))
    return payment


# --- finding our payment --------------------------------------------------------------------


def _payment_for_intent(intent: dict) -> tuple[Payment, str]:
    intent_id = _id(intent.get("id"))
    payment = _find_payment(intent_id=intent_id, metadata=intent.get("metadata"))
    if intent_id is None:  # found by metadata alone: nothing to check the event against
        raise fulfilment.PaymentMismatch(
            f"payment {payment.pk}: the event names no PaymentIntent id", "This payment does not match our records."
        )
    return payment, intent_id


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
    _check_user(payment, metadata, intent_id)
    return payment


def _check_user(payment: Payment, metadata, intent_id: str | None) -> None:
    """Our PaymentIntents carry the payment's user in `metadata.user_id` (reconcile checks it
    too). An event naming another user never credits, fails or claws back this payment.

    When the intent is the one we stored for this payment, our own records contradict Stripe's:
    the event fails (500), so staff see it and nothing moves. Otherwise the intent is not ours
    for this payment: payment ids repeat across installations sharing a Stripe account (a
    second environment, a reset database), and intents older than `payment_ref` carry only the
    id and the user, so it is ignored, and Stripe stops resending an event we must never apply.
    """
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if user_id is None or user_id == str(payment.user_id):
        return
    if intent_id is not None and intent_id == payment.stripe_payment_intent_id:
        raise fulfilment.PaymentMismatch(
            f"payment {payment.pk} is user {payment.user_id}'s, its intent {intent_id} names user {user_id!r}",
            "This payment does not match our records.",
        )
    raise NotOurs(f"PaymentIntent {intent_id} names user {user_id!r}, payment {payment.pk} is another user's")


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


def _charge_id(value) -> str | None:
    """A charge id worth asking Stripe about (charges are ch_..., some payment methods' py_...)."""
    value = _id(value)
    return value if value is not None and _CHARGE_ID.fullmatch(value) else None


_CHARGE_ID = re.compile(r"(ch|py)_[A-Za-z0-9]{1,250}")


def _is_amount(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _int_or_none(value) -> int | None:
    """A positive database id, or None (metadata values are strings, and may be anything)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        return None
    return number if 0 < number < 2**63 else None
