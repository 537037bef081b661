"""The JSON API the original React client used (SPEC 9), on top of the same services as the pages.

- `GET /api/current_user`: `{"id", "email", "credits"}`, or JSON `null` when nobody is signed in.
- `POST /api/stripe` `{"id": "pm_..."}`: buys `BILLING_DEFAULT_PACK` exactly as
  `POST /billing/charge/` does; success answers the updated user object, every other outcome
  (3-D Secure, decline, bad input, Stripe unavailable) the charge endpoint's own answer.
- `GET /api/logout`: signs out and redirects to LOGOUT_REDIRECT_URL (default `/`).
"""

from django.contrib.auth import logout as auth_logout
from django.http import JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_http_methods

from billing import charges
from billing.conf import app_settings
from billing.ledger import get_balance
from billing.ratelimit import rate_limited
from billing.views import charge_response, json_post_endpoint, read_json_object


def user_object(user) -> dict:
    # Any user model: its email field when it has one, else the username (the client shows it).
    email = getattr(user, user.get_email_field_name(), None) or user.get_username()
    return {"id": user.pk, "email": email, "credits": get_balance(user)}


@require_GET
def current_user(request):
    if not request.user.is_authenticated:
        return JsonResponse(None, safe=False)
    return JsonResponse(user_object(request.user))


@rate_limited("charge")  # one budget with /billing/charge/: both create charges
@json_post_endpoint
def stripe_charge(request):
    data = read_json_object(request)
    result = charges.start_charge(
        request.user, pack_slug=app_settings.BILLING_DEFAULT_PACK, payment_method=data.get("id")
    )
    if result.status == "succeeded":
        return JsonResponse(user_object(request.user))
    return charge_response(result)


@require_http_methods(["GET", "POST"])
def logout(request):
    auth_logout(request)
    return redirect(app_settings.LOGOUT_REDIRECT_URL or "/")
