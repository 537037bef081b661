"""The billing page and the charge endpoints (docs/INSTALL.md, "URLs"); the work is in
billing.charges, the JSON handling in billing.http."""

from http import HTTPStatus

from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.utils.translation import gettext as _

from billing import autorecharge, cards, charges, notices, selectors
from billing.conf import app_settings
from billing.exceptions import BadRequest, NoSavedCard
from billing.http import card_response, charge_response, json_post_endpoint, read_json_object
from billing.ledger import get_balance
from billing.pages import render_page
from billing.ratelimit import rate_limited


@login_required
def billing_page(request):
    """Balance (by category, what expires when, and what is on hold), packs to buy, payment
    history and the ledger (paginated, newest first)."""
    balance = get_balance(request.user)
    holds = selectors.active_holds(request.user)
    saved_card, auto_recharge = selectors.saved_card_and_auto_recharge(request.user)
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
            "saved_card": saved_card,
            "auto_recharge": auto_recharge,
            "stripe_publishable_key": app_settings.STRIPE_PUBLISHABLE_KEY or "",
            "receipt_statuses": selectors.RECEIPT_STATUSES,
            "payments": selectors.payments_page(
                request.user, request.GET.get("payments"), per_page=app_settings.BILLING_PAYMENTS_PAGE_SIZE
            ),
            "ledger": selectors.ledger_page(
                request.user, request.GET.get("page"), per_page=app_settings.BILLING_LEDGER_PAGE_SIZE
            ),
        },
    )


@login_required
def receipt(request, reference: str):
    """The receipt of one of the user's credited payments, printable; anyone else's is a 404."""
    payment = selectors.receipt_payment(request.user, reference)
    if payment is None:
        raise Http404(_("No such receipt."))
    return render_page(request, "billing/receipt.html", notices.receipt_context(payment))


# --- the charge endpoints (docs/INSTALL.md, "URLs"): JSON in, JSON out; the work is in billing.charges ----------


@rate_limited("charge")
@json_post_endpoint
def charge(request):
    """POST {"pack": slug, "payment_method": "pm_..."}, or {"pack": slug, "saved_card": true} to
    pay with the saved card: buy a pack (docs/INSTALL.md, "URLs")."""
    data = read_json_object(request)
    if "saved_card" in data:
        if data["saved_card"] is not True or "payment_method" in data:
            raise BadRequest("saved_card must be true, without a payment_method")
        result = cards.buy_with_saved_card(request.user, pack_slug=data.get("pack"))
    else:
        result = charges.start_charge(
            request.user, pack_slug=data.get("pack"), payment_method=data.get("payment_method")
        )
    return charge_response(result)


@rate_limited("charge-confirm")
@json_post_endpoint
def confirm_charge(request, payment_id: int):
    """POST after 3-D Secure: settle the payment from Stripe's answer. The body is ignored."""
    return charge_response(charges.confirm_charge(request.user, payment_id))


@rate_limited("charge-confirm")
@json_post_endpoint
def resume_charge(request, payment_id: int):
    """POST: a payment of the user's left in 3-D Secure, to finish from its row on /billing/:
    {"status": "requires_action", "client_secret", "payment"} for Stripe.js, then the confirm
    endpoint settles it. 404 for another user's payment, 409 (with a sentence) for one that is
    not waiting. The body is ignored."""
    return charge_response(charges.resume_charge(request.user, payment_id))


# --- saved cards (docs/INSTALL.md, "Saved cards"): JSON in, JSON out; the work is in billing.cards ----------


@rate_limited("card")
@json_post_endpoint
def card_setup(request):
    """POST: a SetupIntent for the user's Stripe Customer; its client_secret is for Stripe.js
    confirmCardSetup. The body is ignored."""
    setup = cards.start_card_setup(request.user)
    return JsonResponse({"setup_intent": setup.id, "client_secret": setup.client_secret})


@rate_limited("card")
@json_post_endpoint
def save_card(request):
    """POST {"setup_intent": "seti_..."} once Stripe.js confirmed it: save its card (201)."""
    data = read_json_object(request)
    card = cards.save_card_from_setup(request.user, data.get("setup_intent"))
    return card_response(card, status=HTTPStatus.CREATED)


@rate_limited("card")
@json_post_endpoint
def remove_card(request):
    """POST: detach the saved card at Stripe and forget it. The body is ignored."""
    card = cards.saved_card(request.user)
    if card is None:
        raise NoSavedCard(f"user {request.user.pk} has no saved card")
    cards.remove_card(card)
    return JsonResponse({"removed": True})


@rate_limited("card")
@json_post_endpoint
def auto_recharge(request):
    """POST {"enabled": true|false, "pack": slug, "threshold": credits, "monthly_limit": n}: save the
    auto-recharge settings (billing.autorecharge.configure); answers them with the consent wording."""
    data = read_json_object(request)
    enabled = data.get("enabled")
    if not isinstance(enabled, bool):
        raise BadRequest("enabled missing or not a boolean", _("Say whether auto-recharge is on."))
    setting = autorecharge.configure(
        request.user,
        enabled=enabled,
        pack=data.get("pack"),
        threshold=data.get("threshold"),
        monthly_limit=data.get("monthly_limit"),
    )
    return JsonResponse(
        {
            "enabled": setting.enabled,
            "pack": setting.pack.slug,
            "threshold": setting.threshold,
            "monthly_limit": setting.monthly_limit,
            "consent": setting.consent_text if setting.enabled else "",
            "paused": setting.paused_at is not None,
        }
    )
