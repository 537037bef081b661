"""`{% load billing %}`: billing's pieces for a project's own templates.

In a base template's header, for a signed-in user (anonymous visitors get nothing):

    {% billing_header %}        the balance ("Credits: N", linking to the billing page) and "Add credits"
    {% credits_balance %}       just the balance;   {% add_credits_button %}   just the button

`{% billing_checkout %}` adds the Add credits dialog and its scripts (Stripe.js from
STRIPE_JS_URL, billing/billing.js) to a page, once however often it is used: billing's own pages
include it; a base template may add it so the header's button opens the dialog on every page
(one query for the packs on each page). Without it the button goes to the billing page and opens
the dialog there. The publishable key is the only Stripe setting a page sees.
"""

from django import template
from django.urls import reverse

from billing import selectors
from billing.conf import app_settings
from billing.ledger import get_balance

register = template.Library()

PAYMENT_ID_PLACEHOLDER = "PAYMENT_ID"
_CHECKOUT_DONE = "billing.checkout_rendered"


def _user(context):
    user = context.get("user")
    if user is None and context.get("request") is not None:
        user = getattr(context["request"], "user", None)
    return user if user is not None and user.is_authenticated else None


def _header(context, *, balance: bool, button: bool) -> dict:
    user = _user(context)
    if user is None:
        return {"show": False}
    credits = None
    if balance:
        # The billing page (and billing.context_processors.billing) put the balance in the
        # context already: use it rather than read it again.
        credits = context.get("header_credits")
        if credits is None:
            credits = get_balance(user)
    return {
        "show": True,
        "balance": balance,
        "button": button,
        "credits": credits,
        "billing_url": reverse("billing:index"),
    }


@register.inclusion_tag("billing/_header.html", takes_context=True)
def billing_header(context):
    return _header(context, balance=True, button=True)


@register.inclusion_tag("billing/_header.html", takes_context=True)
def credits_balance(context):
    return _header(context, balance=True, button=False)


@register.inclusion_tag("billing/_header.html", takes_context=True)
def add_credits_button(context):
    return _header(context, balance=False, button=True)


@register.simple_tag(takes_context=True)
def billing_checkout(context, packs=None):
    """The Add credits dialog and the scripts it needs, for a signed-in user, once per page."""
    if _user(context) is None or context.render_context.get(_CHECKOUT_DONE):
        return ""
    context.render_context[_CHECKOUT_DONE] = True
    packs = list(selectors.active_packs() if packs is None else packs)
    if not packs:
        return ""
    engine = context.template.engine
    values = {
        **_dialog_context(context, packs),
        "stripe_js_url": app_settings.STRIPE_JS_URL,
    }
    return engine.get_template("billing/_checkout.html").render(template.Context(values, autoescape=context.autoescape))


def _dialog_context(context, packs) -> dict:
    slugs = [pack.slug for pack in packs]
    wanted = app_settings.BILLING_DEFAULT_PACK
    default_pack = wanted if wanted in slugs else (slugs or [""])[0]
    key = app_settings.STRIPE_PUBLISHABLE_KEY or ""
    return {
        "packs": packs,
        "default_pack": default_pack,
        "csrf_token": context.get("csrf_token"),
        "stripe_publishable_key": key,
        "charge_url": reverse("billing:charge"),
        "confirm_url": reverse("billing:charge_confirm", args=[0]).replace("/0/", f"/{PAYMENT_ID_PLACEHOLDER}/"),
        "payment_id_placeholder": PAYMENT_ID_PLACEHOLDER,
        "test_mode": key.startswith("pk_test_") or bool(app_settings.STRIPE_API_BASE),
    }
