"""`@credits_required(n)`: gate a view on a balance and charge for it only when it succeeds."""

from functools import wraps
from http import HTTPStatus

from django.contrib.auth.views import redirect_to_login
from django.db import transaction
from django.http import JsonResponse
from django.utils.translation import gettext as _

from billing.exceptions import InsufficientCredits
from billing.ledger import spend_credits
from billing.pages import render_page


def wants_json(request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept or request.content_type == "application/json"


def credits_required(cost: int, *, reason: str | None = None):
    """Spend `cost` credits for each successful call of the view (status below 400).

    The spend and the view run in one transaction: if the view fails (an exception or a 4xx/5xx
    answer) the spend and the view's own writes roll back together, and a short balance is found
    by the conditional UPDATE itself, so two concurrent calls can never both pass on one credit.
    A short balance answers 402 (JSON for API clients, a page linking to Add Credits otherwise).
    An `Idempotency-Key` header makes a retried request spend once.
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
            client_key = request.headers.get("Idempotency-Key", "").strip()[:100]
            key = f"spend:{request.user.pk}:{client_key}" if client_key else None
            try:
                with transaction.atomic():
                    spend_credits(request.user, cost, reason=label, idempotency_key=key)
                    response = view(request, *args, **kwargs)
                    if response.status_code >= 400:
                        transaction.set_rollback(True)
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

        wrapper.credits_cost = cost
        return wrapper

    return decorator
