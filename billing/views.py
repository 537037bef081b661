import json
import logging
from functools import wraps
from http import HTTPStatus

from django.contrib.auth.decorators import login_required
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from billing import charges, selectors, stripe_gateway
from billing.conf import app_settings
from billing.exceptions import BillingError
from billing.fulfilment import CreditingRefused, PaymentMismatch
from billing.ledger import get_balance
from billing.pages import render_page
from billing.ratelimit import rate_limited

logger = logging.getLogger(__name__)


@login_required
def billing_page(request):
    """Balance, packs to buy, payment history and the ledger (paginated, newest first)."""
    balance = get_balance(request.user)
    return render_page(
        request,
        "billing/index.html",
        {
            "balance": balance,
            "header_credits": balance,  # the header's balance, without reading it a second time
            "packs": selectors.active_packs(),
            "payments": selectors.recent_payments(request.user),
            "ledger": selectors.ledger_page(
                request.user, request.GET.get("page"), per_page=app_settings.BILLING_LEDGER_PAGE_SIZE
            ),
        },
    )


# --- the charge endpoints (docs/INSTALL.md, "URLs"): JSON in, JSON out; the work is in billing.charges ----------

MAX_JSON_BODY = 4096  # a pack slug and a payment method id fit many times over
ERROR_STATUS = (
    (charges.InvalidCharge, HTTPStatus.BAD_REQUEST),
    (stripe_gateway.InvalidPaymentRequest, HTTPStatus.BAD_REQUEST),
    (stripe_gateway.CardDeclined, HTTPStatus.PAYMENT_REQUIRED),
    (charges.PaymentNotFound, HTTPStatus.NOT_FOUND),
    (charges.PaymentInProgress, HTTPStatus.CONFLICT),
    (PaymentMismatch, HTTPStatus.CONFLICT),
    (stripe_gateway.StripeUnavailable, HTTPStatus.SERVICE_UNAVAILABLE),
    # Our side failed after Stripe took the money; the payment is flagged for staff.
    (CreditingRefused, HTTPStatus.INTERNAL_SERVER_ERROR),
)


DATABASE_UNAVAILABLE = gettext_lazy(
    "We could not record your payment just now. If your card was charged, the credits will be added "
    "automatically within a few minutes; reload the page to check before trying again."
)
UNEXPECTED_ERROR = gettext_lazy(
    "Something went wrong on our side. If your card was charged, the credits will be added "
    "automatically; reload the page to check before trying again."
)


class BadJSON(BillingError):
    """The request body is not a small JSON object."""


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
        except BillingError as exc:
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
    """The body as a JSON object, or BadJSON (never a 500 for whatever a client sends)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_JSON_BODY:
        raise BadJSON("request body too large", _("The request is too large."))
    try:
        body = request.body
    except RequestDataTooBig as exc:
        raise BadJSON("request body too large", _("The request is too large.")) from exc
    if len(body) > MAX_JSON_BODY:
        raise BadJSON("request body too large", _("The request is too large."))
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadJSON("request body is not JSON", _("Send a JSON object.")) from exc
    if not isinstance(data, dict):
        raise BadJSON("request body is not a JSON object", _("Send a JSON object."))
    return data


def error_response(exc: BillingError) -> JsonResponse:
    status = next((code for kind, code in ERROR_STATUS if isinstance(exc, kind)), HTTPStatus.BAD_REQUEST)
    return JsonResponse({"error": exc.user_message}, status=status)


def charge_response(result: charges.ChargeResult) -> JsonResponse:
    payment_id = result.payment.pk
    if result.status == "succeeded":
        return JsonResponse(
            {"status": "succeeded", "credits": result.credits, "added": result.added, "payment": payment_id}
        )
    if result.status == "requires_action":
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


@rate_limited("charge")
@json_post_endpoint
def charge(request):
    """POST {"pack": slug, "payment_method": "pm_..."}: buy a pack (docs/INSTALL.md, "URLs")."""
    data = read_json_object(request)
    result = charges.start_charge(request.user, pack_slug=data.get("pack"), payment_method=data.get("payment_method"))
    return charge_response(result)


@rate_limited("charge-confirm")
@json_post_endpoint
def confirm_charge(request, payment_id: int):
    """POST after 3-D Secure: settle the payment from Stripe's answer. The body is ignored."""
    return charge_response(charges.confirm_charge(request.user, payment_id))
