"""JSON in, JSON out: what the JSON views (billing.views' charge endpoints, billing.emaily_views)
share. Every error a caller can cause is answered as JSON with its status, never Django's HTML
error page; `ERROR_STATUS` is the one table from a `billing.exceptions` class to its status."""

import json
import logging
from functools import wraps
from http import HTTPStatus

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from billing import exceptions
from billing.charges import ChargeResult
from billing.models import SavedCard
from billing.stripe_gateway import IntentStatus

logger = logging.getLogger(__name__)

MAX_JSON_BODY = 4096  # a pack slug and a payment method id fit many times over

# First match wins (subclasses before their bases); any other BillingError is a 400.
ERROR_STATUS = (
    (exceptions.BadRequest, HTTPStatus.BAD_REQUEST),
    (exceptions.InvalidCharge, HTTPStatus.BAD_REQUEST),
    (exceptions.InvalidPaymentRequest, HTTPStatus.BAD_REQUEST),
    (exceptions.InsufficientCredits, HTTPStatus.PAYMENT_REQUIRED),
    (exceptions.CardDeclined, HTTPStatus.PAYMENT_REQUIRED),
    (exceptions.InvalidCard, HTTPStatus.BAD_REQUEST),
    (exceptions.InvalidAutoRecharge, HTTPStatus.BAD_REQUEST),
    (exceptions.PaymentNotFound, HTTPStatus.NOT_FOUND),
    (exceptions.NoSavedCard, HTTPStatus.NOT_FOUND),
    (exceptions.PaymentInProgress, HTTPStatus.CONFLICT),
    (exceptions.PaymentNotOpen, HTTPStatus.CONFLICT),
    (exceptions.PaymentMismatch, HTTPStatus.CONFLICT),
    (exceptions.IdempotencyKeyReused, HTTPStatus.UNPROCESSABLE_ENTITY),
    (exceptions.StripeUnavailable, HTTPStatus.SERVICE_UNAVAILABLE),
    # Our side failed after Stripe took the money; the payment is flagged for staff.
    (exceptions.CreditingRefused, HTTPStatus.INTERNAL_SERVER_ERROR),
)

DATABASE_UNAVAILABLE = gettext_lazy(
    "We could not record your payment just now. If your card was charged, the credits will be added "
    "automatically within a few minutes; reload the page to check before trying again."
)
UNEXPECTED_ERROR = gettext_lazy(
    "Something went wrong on our side. If your card was charged, the credits will be added "
    "automatically; reload the page to check before trying again."
)


def json_post_endpoint(view):
    """POST only (405), signed in (401), BillingErrors answered as JSON with their status, and
    a lost database connection answered 503 JSON rather than Django's HTML 500 page.

    CSRF stays with Django's middleware, which runs before this and answers 403.
    """

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method != "POST":
            response = JsonResponse({"error": _("Use POST.")}, status=HTTPStatus.METHOD_NOT_ALLOWED)
            response["Allow"] = "POST"
            return response
        if not request.user.is_authenticated:
            return JsonResponse({"error": _("Sign in first.")}, status=HTTPStatus.UNAUTHORIZED)
        try:
            return view(request, *args, **kwargs)
        except exceptions.BillingError as exc:
            return error_response(exc)
        except (OperationalError, InterfaceError):
            # The database went away mid-request, possibly after Stripe accepted the charge. The
            # payment row was committed before the Stripe call and Stripe's metadata names it, so
            # the webhook or reconcile_payments settles it; the page needs a sentence it can show.
            logger.exception("database unavailable during %s", request.path)
            return JsonResponse({"error": DATABASE_UNAVAILABLE}, status=HTTPStatus.SERVICE_UNAVAILABLE)
        except Exception:
            # A bug of ours must still answer the JSON the caller reads, never Django's HTML page.
            # The payment, if one was started, was committed before Stripe was called, so the
            # webhook or reconcile_payments settles it.
            logger.exception("unexpected error during %s", request.path)
            return JsonResponse({"error": UNEXPECTED_ERROR}, status=HTTPStatus.INTERNAL_SERVER_ERROR)

    return wrapper


def read_json_object(request) -> dict:
    """The body as a JSON object, or BadRequest (never a 500 for whatever a client sends)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    too_large = exceptions.BadRequest("request body too large", _("The request is too large."))
    if declared > MAX_JSON_BODY:
        raise too_large
    try:
        body = request.body
    except RequestDataTooBig as exc:
        raise too_large from exc
    if len(body) > MAX_JSON_BODY:
        raise too_large
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise exceptions.BadRequest("request body is not JSON") from exc
    if not isinstance(data, dict):
        raise exceptions.BadRequest("request body is not a JSON object")
    return data


def error_status(exc: exceptions.BillingError) -> HTTPStatus:
    return next((code for kind, code in ERROR_STATUS if isinstance(exc, kind)), HTTPStatus.BAD_REQUEST)


def error_response(exc: exceptions.BillingError) -> JsonResponse:
    return JsonResponse({"error": exc.user_message}, status=error_status(exc))


def charge_response(result: ChargeResult) -> JsonResponse:
    """The charge endpoints' answer: succeeded (200), requires_action (200, with the client
    secret for Stripe.js) or processing (202)."""
    payment_id = result.payment.pk
    if result.status == IntentStatus.SUCCEEDED:
        return JsonResponse(
            {"status": "succeeded", "credits": result.credits, "added": result.added, "payment": payment_id}
        )
    if result.status == IntentStatus.REQUIRES_ACTION:
        return JsonResponse({"status": "requires_action", "client_secret": result.client_secret, "payment": payment_id})
    # Stripe has not decided yet (rare for cards): the webhook settles it; "error" is for the page to show.
    return JsonResponse(
        {
            "status": "processing",
            "payment": payment_id,
            "error": _("Your payment is still processing. Your credits will appear once it completes."),
        },
        status=HTTPStatus.ACCEPTED,
    )


def card_response(card: SavedCard, *, status: int = HTTPStatus.OK) -> JsonResponse:
    """A saved card as the page shows it (never more than Stripe shows: brand, last 4, expiry)."""
    return JsonResponse(
        {
            "card": {
                "brand": card.brand,
                "last4": card.last4,
                "exp_month": card.exp_month,
                "exp_year": card.exp_year,
            }
        },
        status=status,
    )
