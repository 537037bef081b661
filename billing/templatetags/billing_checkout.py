"""The Add Credits dialog and the scripts it needs, configured from settings.

The page gets the publishable key and nothing else from Stripe's settings. The localstripe
adapter (a stand-in for the one Stripe.js call localstripe lacks) is added only when
STRIPE_API_BASE points the site at a local stand-in, which production never sets.
"""

from django import template
from django.conf import settings
from django.urls import reverse

register = template.Library()

PAYMENT_ID_PLACEHOLDER = "PAYMENT_ID"


@register.inclusion_tag("billing/_add_credits_dialog.html", takes_context=True)
def add_credits_dialog(context, packs):
    packs = list(packs)
    slugs = [pack.slug for pack in packs]
    default_pack = settings.BILLING_DEFAULT_PACK if settings.BILLING_DEFAULT_PACK in slugs else (slugs or [""])[0]
    base = reverse("billing:index")  # SPEC 7.4 fixes the charge paths under the billing page
    key = settings.STRIPE_PUBLISHABLE_KEY
    return {
        "packs": packs,
        "default_pack": default_pack,
        "csrf_token": context.get("csrf_token"),
        "stripe_publishable_key": key,
        "charge_url": f"{base}charge/",
        "confirm_url": f"{base}charge/{PAYMENT_ID_PLACEHOLDER}/confirm/",
        "payment_id_placeholder": PAYMENT_ID_PLACEHOLDER,
        "test_mode": key.startswith("pk_test_") or bool(settings.STRIPE_API_BASE),
    }


@register.inclusion_tag("billing/_checkout_scripts.html")
def checkout_scripts():
    return {
        "stripe_js_url": settings.STRIPE_JS_URL,
        "localstripe_api_base": (settings.STRIPE_API_BASE or "").rstrip("/"),
    }
