"""`POST /billing/webhook/`: the door. Checks the body's size, signature and shape, then either
stores the event and answers at once, a worker doing its work (`queue.accept_event`, when
BILLING_WEBHOOKS_ASYNC), or answers a redelivery of a finished event from one read and hands a
new event to the event store, which does its work before the answer."""

from __future__ import annotations

from http import HTTPStatus

from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing import stripe_gateway
from billing.exceptions import WebhookSignatureError
from billing.models import StripeEvent
from billing.webhooks import queue
from billing.webhooks.store import final_status, logger, receive_event


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
    except WebhookSignatureError as exc:  # bad signature, stale timestamp, not JSON
        return _error(exc.user_message, HTTPStatus.BAD_REQUEST)
    except ValueError:  # belt and braces: a body that is not UTF-8 must never become a 500
        return _error("Invalid payload.", HTTPStatus.BAD_REQUEST)
    if _malformed(event):
        return _error("Invalid payload.", HTTPStatus.BAD_REQUEST)

    if queue.webhooks_async():
        # One statement answers a new event and a redelivery alike (`accept_event`).
        try:
            status, duplicate = queue.accept_event(event, body)
        except Exception:  # the database refused or is gone: not stored, so Stripe must send it again
            logger.exception("stripe event %s could not be stored", event["id"])
            return _error("The event could not be stored; it will be retried.", HTTPStatus.SERVICE_UNAVAILABLE)
        return JsonResponse({"received": True, "status": status, "duplicate": duplicate})
    status = final_status(event["id"])
    if status is not None:  # a redelivery of a finished event: one read, no transaction
        return JsonResponse({"received": True, "status": status, "duplicate": True})
    record, duplicate = receive_event(event)
    if record.status == StripeEvent.Status.FAILED:
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
