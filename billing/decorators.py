"""Paid views: `@credits_required(n)` charges a fixed price, `billing.metering.metered_view(up_to)`
what the view reports; both only when the view succeeds.

Both are built on holds (docs/DESIGN.md, "Holds"): the credits are reserved before the view runs
(a short balance answers 402 and the view never runs), the view runs with no ledger transaction
and no row lock open (a slow view, say one that calls an AI API, never blocks the same user's
other spending), and then what it used is captured, or everything released when it fails (an
exception, or an answer of 400 or more).

An `Idempotency-Key` header makes the request happen at most once, as Stripe's API does. The
key is claimed (user, key: a unique row) before the view runs, with the hold; the first
successful response is stored with the capture, in one transaction, and a repeat of the request
with the same key is answered with it (marked `Idempotent-Replayed: true`) without running the
view or charging again. A repeat that arrives while the first is still running waits for it; a
first request that failed leaves nothing, so the repeat runs; one that died mid-way is taken
over once its hold has ended. The same key on a different request (another view, price or path)
is refused with 422, a malformed key with 400. See the README, "Paid actions".
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import timedelta
from functools import wraps
from http import HTTPStatus

from django.contrib.auth.views import redirect_to_login
from django.db import IntegrityError, transaction
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from billing import ledger
from billing.conf import app_settings
from billing.exceptions import InsufficientCredits
from billing.models import Hold, IdempotentRequest, LedgerEntry
from billing.pages import render_page

logger = logging.getLogger(__name__)

# A client's Idempotency-Key: printable ASCII (a UUID, a hash, a request id), at most this long.
# Longer keys are refused, never cut: two keys sharing a prefix must stay two keys.
MAX_IDEMPOTENCY_KEY_LENGTH = 200
# A first response larger than this is not kept; a repeat of its request is refused (409).
MAX_STORED_RESPONSE = 256 * 1024
REPLAYED_HEADER = "Idempotent-Replayed"
WAIT_INTERVAL = 0.05  # seconds between looks at a first request that is still running


def wants_json(request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept or request.content_type == "application/json"


def credits_required(cost: int, *, reason: str | None = None):
    """Charge `cost` credits for each successful call of the view (status below 400)."""
    if not isinstance(cost, int) or isinstance(cost, bool) or cost <= 0:
        raise ValueError("credits_required needs a positive whole number of credits")

    def decorator(view):
        wrapper = paid_view(view, amount=cost, reason=reason, metered=False)
        wrapper.credits_cost = cost
        return wrapper

    return decorator


def paid_view(view, *, amount: int, reason: str | None, metered: bool, expires_in: timedelta | None = None):
    """Wrap `view` to hold `amount` credits (for `expires_in`, default 15 minutes) while it runs
    and capture `amount` (or, when `metered`, what it charged on `request.meter`, at most
    `amount`) when it succeeds."""
    from billing.metering import Meter

    label = reason or f"{view.__module__}.{view.__qualname__}"
    hold_options = {} if expires_in is None else {"expires_in": expires_in}

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            if wants_json(request):
                return JsonResponse({"error": _("Sign in first.")}, status=HTTPStatus.UNAUTHORIZED)
            return redirect_to_login(request.get_full_path())
        client_key = request.headers.get("Idempotency-Key")
        if client_key is not None:
            problem = _key_problem(client_key)
            if problem:
                return _refusal(problem, HTTPStatus.BAD_REQUEST)
            client_key = client_key.strip()
            if LedgerEntry.objects.filter(idempotency_key=f"spend:{request.user.pk}:{client_key}").exists():
                # A key a direct ledger call (or a request before holds) spent: never run it again.
                return _refusal(KEY_REUSED, HTTPStatus.UNPROCESSABLE_ENTITY)
        claim = None
        if client_key:
            # Claimed before anything is reserved: a repeat of a finished request is replayed
            # without needing credits, and concurrent copies wait for the first one.
            claim, answer = _claim(request, client_key, _fingerprint(request, label, amount))
            if answer is not None:
                return answer
        try:
            hold = ledger.hold_credits(request.user, amount, reason=label, **hold_options)
        except InsufficientCredits as short:
            _let_go(claim)
            return _short(request, short, amount, up_to=metered)
        except BaseException:
            _let_go(claim)
            raise
        if claim is not None:
            IdempotentRequest.objects.filter(pk=claim.pk).update(hold=hold)
        meter = Meter(hold=hold, up_to=amount, charged=0 if metered else amount)
        if metered:
            request.meter = meter
        try:
            response = view(request, *args, **kwargs)
        except BaseException:
            _abandon(hold, claim)
            raise
        if response.status_code >= 400:
            _abandon(hold, claim)
            return response
        if meter.exceeded:
            logger.warning(
                "%s charged %s credits, more than the %s it held: %s captured", label, meter.charged, amount, amount
            )
        with transaction.atomic():
            meter.entry = ledger.capture_hold(hold, meter.captured, reason=label)
            if claim is not None:
                _keep(claim, response)
        return response

    return wrapper


KEY_REUSED = gettext_lazy(
    "This Idempotency-Key was already used for a different request. Send a new key for a new request."
)
NOT_REPLAYABLE = gettext_lazy(
    "This request was already completed with this Idempotency-Key; its response cannot be repeated."
)
STILL_RUNNING = gettext_lazy(
    "A request with this Idempotency-Key is still running. Try again in a moment for its response."
)


def _short(request, short: InsufficientCredits, amount: int, *, up_to: bool = False) -> HttpResponse:
    if wants_json(request):
        return JsonResponse(
            {"error": short.user_message, "credits": short.balance, "required": amount},
            status=HTTPStatus.PAYMENT_REQUIRED,
        )
    return render_page(
        request,
        "billing/insufficient_credits.html",
        {"required": amount, "balance": short.balance, "up_to": up_to},
        status=HTTPStatus.PAYMENT_REQUIRED,
    )


def _key_problem(key: str) -> str | None:
    key = key.strip()
    if not key:
        return _("The Idempotency-Key header is empty.")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        return _("The Idempotency-Key header must be at most %(n)d characters.") % {"n": MAX_IDEMPOTENCY_KEY_LENGTH}
    if not all(" " <= ch <= "~" for ch in key):
        return _("The Idempotency-Key header must be printable ASCII.")
    return None


def _fingerprint(request, label: str, amount: int) -> str:
    """What the key is used for: the same key on another view, price, method or path is another request."""
    text = "\n".join([label, str(amount), request.method, request.path])
    return hashlib.sha256(text.encode()).hexdigest()


def _claim(request, key: str, fingerprint: str) -> tuple[IdempotentRequest | None, HttpResponse | None]:
    """Claim (user, key) for this request, or answer from the request that claimed it first:
    its stored response, 422 for another request, or (after waiting for a first request that
    is still running, up to the web timeout) 409."""
    deadline = time.monotonic() + float(app_settings.BILLING_WEB_TIMEOUT_SECONDS)
    while True:
        try:
            with transaction.atomic():
                claimed = IdempotentRequest.objects.create(user=request.user, key=key, fingerprint=fingerprint)
            return claimed, None
        except IntegrityError:
            stored = IdempotentRequest.objects.select_related("hold").filter(user=request.user, key=key).first()
        if stored is None:
            continue  # the first request failed and let go of the key meanwhile: claim it
        if stored.fingerprint != fingerprint:
            return None, _refusal(KEY_REUSED, HTTPStatus.UNPROCESSABLE_ENTITY)
        if stored.status_code is not None:
            return None, _replay(stored)
        if _died(stored):
            # The first request ended without finishing (its hold ended uncaptured): take over.
            IdempotentRequest.objects.filter(pk=stored.pk, status_code__isnull=True, hold=stored.hold).delete()
            continue
        if time.monotonic() > deadline:
            response = _refusal(STILL_RUNNING, HTTPStatus.CONFLICT)
            response["Retry-After"] = "1"
            return None, response
        time.sleep(WAIT_INTERVAL)


def _died(stored: IdempotentRequest) -> bool:
    hold = stored.hold
    if hold is None:
        # Claimed and not yet holding: a moment's work, unless the request died in between.
        timeout = timedelta(seconds=float(app_settings.BILLING_WEB_TIMEOUT_SECONDS))
        return stored.created_at < timezone.now() - timeout
    return hold.status in (Hold.Status.RELEASED, Hold.Status.EXPIRED) or (
        hold.status == Hold.Status.ACTIVE and hold.expires_at <= timezone.now()
    )


def _replay(stored: IdempotentRequest) -> HttpResponse:
    if stored.body is None:
        return _refusal(NOT_REPLAYABLE, HTTPStatus.CONFLICT)
    response = HttpResponse(bytes(stored.body), status=stored.status_code, content_type=stored.content_type or None)
    if stored.location:
        response["Location"] = stored.location
    response[REPLAYED_HEADER] = "true"
    return response


def _let_go(claim: IdempotentRequest | None) -> None:
    """Nothing was reserved: free the key for a retry."""
    if claim is not None:
        IdempotentRequest.objects.filter(pk=claim.pk, status_code__isnull=True).delete()


def _abandon(hold: Hold, claim: IdempotentRequest | None) -> None:
    """The view failed: nothing is charged and the key is free for a retry."""
    with transaction.atomic():
        if claim is not None:
            IdempotentRequest.objects.filter(pk=claim.pk, status_code__isnull=True).delete()
        ledger.release_hold(hold)


def _keep(record: IdempotentRequest, response: HttpResponse) -> None:
    record.status_code = response.status_code
    record.content_type = response.get("Content-Type", "")[:255]
    record.location = response.get("Location", "")[:2000]
    body = None if response.streaming else response.content
    record.body = body if body is not None and len(body) <= MAX_STORED_RESPONSE else None
    record.save(update_fields=["status_code", "content_type", "location", "body"])


def _refusal(message: str, status: HTTPStatus) -> HttpResponse:
    # Only a request with an Idempotency-Key header is refused here: a program, which reads JSON.
    return JsonResponse({"error": message}, status=status)
