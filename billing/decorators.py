"""`@credits_required(n)`: gate a view on a balance and charge for it only when it succeeds."""

import hashlib
from functools import wraps
from http import HTTPStatus

from django.contrib.auth.views import redirect_to_login
from django.db import IntegrityError, transaction
from django.http import HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from billing.exceptions import IdempotencyKeyReused, InsufficientCredits
from billing.ledger import spend_credits
from billing.models import IdempotentRequest
from billing.pages import render_page

# A client's Idempotency-Key: printable ASCII (a UUID, a hash, a request id), at most this long.
# Longer keys are refused, never cut: two keys sharing a prefix must stay two keys.
MAX_IDEMPOTENCY_KEY_LENGTH = 200
# A first response larger than this is not kept; a repeat of its request is refused (409).
MAX_STORED_RESPONSE = 256 * 1024
REPLAYED_HEADER = "Idempotent-Replayed"


def wants_json(request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept or request.content_type == "application/json"


def credits_required(cost: int, *, reason: str | None = None):
    """Spend `cost` credits for each successful call of the view (status below 400).

    The spend and the view run in one transaction: if the view fails (an exception or a 4xx/5xx
    answer) the spend and the view's own writes roll back together, and a short balance is found
    by the conditional UPDATE itself, so two concurrent calls can never both pass on one credit.
    A short balance answers 402 (JSON for API clients, a page linking to Add Credits otherwise).

    An `Idempotency-Key` header makes the request happen at most once, as Stripe's API does: the
    first successful response is stored with the spend, in the same transaction, and a repeat of
    the request with the same key is answered with that stored response (marked with an
    `Idempotent-Replayed: true` header) without running the view or spending again. A repeat
    that arrives while the first is still running waits for it. The same key on a different
    request (another view, cost or path) is refused with 422; a malformed key with 400. See the
    README, "Paid actions".
    """
    if not isinstance(cost, int) or isinstance(cost, bool) or cost <= 0:
        raise ValueError("credits_required needs a positive whole number of credits")

    def decorator(view):
        label = reason or f"{view.__module__}.{view.__qualname__}"

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
            try:
                with transaction.atomic():
                    record = None
                    if client_key:
                        record, replay = _claim_key(request, client_key, _fingerprint(request, label, cost))
                        if replay is not None:
                            return replay
                    key = f"spend:{request.user.pk}:{client_key}" if client_key else None
                    spend_credits(request.user, cost, reason=label, idempotency_key=key)
                    response = view(request, *args, **kwargs)
                    if response.status_code >= 400:
                        transaction.set_rollback(True)
                    elif record is not None:
                        _keep(record, response)
                    return response
            except InsufficientCredits as short:
                if wants_json(request):
                    return JsonResponse(
                        {"error": short.user_message, "credits": short.balance, "required": cost},
                        status=HTTPStatus.PAYMENT_REQUIRED,
                    )
                return render_page(
                    request,
                    "billing/insufficient_credits.html",
                    {"required": cost, "balance": short.balance},
                    status=HTTPStatus.PAYMENT_REQUIRED,
                )
            except IdempotencyKeyReused:
                # The ledger saw this key on another operation (a key stored before requests were
                # recorded, or one shared with a direct ledger call): never spend it twice.
                return _refusal(KEY_REUSED, HTTPStatus.UNPROCESSABLE_ENTITY)

        wrapper.credits_cost = cost
        return wrapper

    return decorator


KEY_REUSED = gettext_lazy(
    "This Idempotency-Key was already used for a different request. Send a new key for a new request."
)
NOT_REPLAYABLE = gettext_lazy(
    "This request was already completed with this Idempotency-Key; its response cannot be repeated."
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


def _fingerprint(request, label: str, cost: int) -> str:
    """What the key is used for: the same key on another view, cost, method or path is another request."""
    text = "\n".join([label, str(cost), request.method, request.path])
    return hashlib.sha256(text.encode()).hexdigest()


def _claim_key(request, key: str, fingerprint: str) -> tuple[IdempotentRequest | None, HttpResponse | None]:
    """Insert the (user, key) row inside the caller's transaction, or answer from the stored one.

    The unique (user, key) constraint decides: a concurrent first request holding the row makes
    this insert wait (PostgreSQL) until it commits (then this is a replay) or rolls back (then
    this request is the first)."""
    try:
        with transaction.atomic():
            return IdempotentRequest.objects.create(user=request.user, key=key, fingerprint=fingerprint), None
    except IntegrityError:
        stored = IdempotentRequest.objects.get(user=request.user, key=key)
    if stored.fingerprint != fingerprint:
        return None, _refusal(KEY_REUSED, HTTPStatus.UNPROCESSABLE_ENTITY)
    if stored.body is None:
        return None, _refusal(NOT_REPLAYABLE, HTTPStatus.CONFLICT)
    response = HttpResponse(bytes(stored.body), status=stored.status_code, content_type=stored.content_type or None)
    if stored.location:
        response["Location"] = stored.location
    response[REPLAYED_HEADER] = "true"
    return None, response


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
