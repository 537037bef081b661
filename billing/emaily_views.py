"""The views of the JSON API the original Emaily React client used (README, "JSON API"), on top
of the same services as the pages.

- `GET /api/current_user`: `{"id", "email", "credits"}`, or JSON `null` when nobody is signed in.
  It also sets the CSRF cookies (Django's and axios's `XSRF-TOKEN`, see billing.middleware), so
  a client that only ever calls the API can POST next.
- `POST /api/stripe` `{"id": "pm_..."}` or the legacy token object `{"id": "tok_...", ...}` of
  Checkout / react-stripe-checkout: buys `BILLING_DEFAULT_PACK` as `POST /billing/charge/`
  does. Every 2xx answer is the user object (the client stores it as the signed-in user) with the
  payment's state beside it: `{"id", "email", "credits", "payment": {"id", "status",
  "client_secret"}}`, status `succeeded`, `requires_action` (3-D Secure; `client_secret` for
  Stripe.js) or `processing` (202). Errors are the charge endpoint's JSON `{"error"}` with its
  4xx/5xx status.
- `GET /api/logout`: signs out and redirects to `/`.
"""

from http import HTTPStatus

from django.contrib.auth import logout as auth_logout
from django.http import JsonResponse
from django.shortcuts import redirect
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods

from billing import charges
from billing.conf import app_settings
from billing.http import json_post_endpoint, read_json_object
from billing.ledger import get_balance
from billing.ratelimit import rate_limited
from billing.stripe_gateway import IntentStatus


def user_object(user) -> dict:
    # Any user model: its email field when it has one, else the username (the client shows it).
    email = getattr(user, user.get_email_field_name(), None) or user.get_username()
    return {"id": user.pk, "email": email, "credits": get_balance(user)}


@require_GET
@ensure_csrf_cookie
def current_user(request):
    if not request.user.is_authenticated:
        return JsonResponse(None, safe=False)
    return JsonResponse(user_object(request.user))


@rate_limited("charge")  # one budget with /billing/charge/: both create charges
@json_post_endpoint
def stripe_charge(request):
    data = read_json_object(request)
    result = charges.start_charge(
        request.user,
        pack_slug=app_settings.BILLING_DEFAULT_PACK,
        payment_method=data.get("id"),
        accept_card_tokens=True,
    )
    payment = {"id": result.payment.pk, "status": result.status, "client_secret": result.client_secret}
    # The client puts whatever a 2xx answers in place of the user; a payment alone would blank its header.
    status = HTTPStatus.ACCEPTED if result.status == IntentStatus.PROCESSING else HTTPStatus.OK
    return JsonResponse({**user_object(request.user), "payment": payment}, status=status)


@require_http_methods(["GET", "POST"])
def logout(request):
    auth_logout(request)
    return redirect(app_settings.LOGOUT_REDIRECT_URL or "/")
