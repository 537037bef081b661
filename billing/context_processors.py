from django.utils.functional import SimpleLazyObject

from billing.conf import app_settings
from billing.ledger import get_balance


def billing(request):
    """`header_credits` for the header on every page (queried only if a template uses it)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"stripe_publishable_key": app_settings.STRIPE_PUBLISHABLE_KEY}
    return {
        "header_credits": SimpleLazyObject(lambda: get_balance(user)),
        "stripe_publishable_key": app_settings.STRIPE_PUBLISHABLE_KEY,
    }
