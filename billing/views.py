"""The billing page and the charge endpoints (docs/INSTALL.md, "URLs"); the work is in
billing.charges, the JSON handling in billing.http."""

from django.contrib.auth.decorators import login_required

from billing import charges, selectors
from billing.conf import app_settings
from billing.http import charge_response, json_post_endpoint, read_json_object
from billing.ledger import get_balance
from billing.pages import render_page
from billing.ratelimit import rate_limited


@login_required
def billing_page(request):
    """Balance (by category, what expires when, and what is on hold), packs to buy, payment
    history and the ledger (paginated, newest first)."""
    balance = get_balance(request.user)
    holds = selectors.active_holds(request.user)
    return render_page(
        request,
        "billing/index.html",
        {
            "balance": balance,
            "header_credits": balance,  # the header's balance, without reading it a second time
            "holdings": selectors.credits_by_category(request.user),
            "holds": holds,
            "on_hold": sum(hold.amount for hold in holds),
            "packs": selectors.active_packs(),
            "payments": selectors.recent_payments(request.user),
            "ledger": selectors.ledger_page(
                request.user, request.GET.get("page"), per_page=app_settings.BILLING_LEDGER_PAGE_SIZE
            ),
        },
    )


# --- the charge endpoints (docs/INSTALL.md, "URLs"): JSON in, JSON out; the work is in billing.charges ----------


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
