"""Every setting billing reads, with its default: the one place billing looks at Django's settings.

    from billing.conf import app_settings
    app_settings.BILLING_DEFAULT_PACK

A project sets only the three Stripe keys (plus `STRIPE_API_BASE` when it talks to a Stripe
stand-in); docs/INSTALL.md has the table. What is missing or malformed is reported by
billing/checks.py at start-up (`manage.py check`), never as an AttributeError at the first request.

Reads are live: a value is looked up in `django.conf.settings` on first use and kept until the
settings object behind `django.conf.settings` changes (override_settings and pytest-django's
`settings` fixture swap it, also when they delete a setting). So a read on a hot path (the
ledger's BILLING_LEDGER_PREPARED_STATEMENTS on every write) is two dictionary lookups, cheaper
than `settings.X` itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS: dict[str, object] = {
    # Stripe's keys have no usable default: checks.py reports them missing (billing.E001-E003).
    "STRIPE_SECRET_KEY": "",
    "STRIPE_PUBLISHABLE_KEY": "",
    "STRIPE_WEBHOOK_SECRET": "",
    # None means the real Stripe API; development and tests point it at a stand-in (localstripe).
    "STRIPE_API_BASE": None,
    "STRIPE_JS_URL": "https://js.stripe.com/v3/",
    # A Stripe call and its retries must end well inside the web worker's timeout (check E013).
    "STRIPE_TIMEOUT_SECONDS": 8,
    "STRIPE_MAX_NETWORK_RETRIES": 1,
    # The web worker's request timeout (gunicorn --timeout): a request still running then is killed.
    "BILLING_WEB_TIMEOUT_SECONDS": 30,
    # The pack `/api/stripe` buys and the Add credits dialog selects first.
    "BILLING_DEFAULT_PACK": "starter",
    # Seconds a payment may wait for the customer's 3-D Secure before it is canceled at Stripe.
    "BILLING_ABANDONED_AFTER": 3600,
    "BILLING_LEDGER_PAGE_SIZE": 25,
    # Payments per page of the history on /billing/ (consecutive failed attempts show as one row).
    "BILLING_PAYMENTS_PAGE_SIZE": 20,
    # PostgreSQL: the ledger's statement prepared once per connection; off behind PgBouncer in
    # transaction mode before 1.21, which cannot keep prepared statements.
    "BILLING_LEDGER_PREPARED_STATEMENTS": True,
    # Charge attempts per signed-in user and window, "<requests>/<seconds>" or "off".
    "BILLING_CHARGE_RATE_LIMIT": "10/60",
    # The template billing/base.html extends; a stand-alone layout is used when it does not exist.
    "BILLING_BASE_TEMPLATE": "base.html",
    # The site's address (e.g. "https://example.com"), for links in emails sent by the worker.
    "BILLING_SITE_URL": "",
    # Email each customer a receipt per purchase and a notice per refund (billing.notices).
    "BILLING_RECEIPT_EMAILS": True,
    # Who sells the credits, as receipts name them; empty: the host of BILLING_SITE_URL.
    "BILLING_SELLER_NAME": "",
    # Where billing's pages send people: "Back home" on the not-enough-credits page.
    "BILLING_HOME_URL": "/",
    # Credits every new user is given: "<credits>" (never expire) or "<credits>/<days>d"
    # (promotional, valid that many days), e.g. "3/30d"; None: no sign-up bonus (check E014).
    "BILLING_SIGNUP_GRANT": None,
    # Webhook events: True stores and acknowledges each one, and a task worker does its work;
    # False does the work in the request; None: True when TASKS' default backend has a worker
    # (anything but django-tasks' immediate and dummy backends). docs/INSTALL.md "Webhooks".
    "BILLING_WEBHOOKS_ASYNC": None,
    # Django's own settings billing reads, with Django's defaults.
    "AUTH_USER_MODEL": "auth.User",
    "LOGOUT_REDIRECT_URL": None,
    # Django's CSRF cookie and header, which billing.middleware mirrors under axios's names.
    "CSRF_HEADER_NAME": "HTTP_X_CSRFTOKEN",
    "CSRF_COOKIE_NAME": "csrftoken",
    "CSRF_COOKIE_AGE": 60 * 60 * 24 * 7 * 52,
    "CSRF_COOKIE_DOMAIN": None,
    "CSRF_COOKIE_PATH": "/",
    "CSRF_COOKIE_SECURE": False,
    "CSRF_COOKIE_SAMESITE": "Lax",
    # Read, never required: the project's Content-Security-Policy (Django 6's SECURE_CSP, or
    # django-csp 4's CONTENT_SECURITY_POLICY), which billing.E009 checks lets Stripe.js work.
    "SECURE_CSP": None,
    "CONTENT_SECURITY_POLICY": None,
    # Read, never required: the task backends (django-tasks' TASKS), which billing.E015 checks.
    "TASKS": None,
}


# django.conf.settings is a LazyObject whose every attribute read costs a __getattribute__ call;
# its instance dict holds the object behind it, which override_settings swaps.
_LAZY_SETTINGS = object.__getattribute__(django_settings, "__dict__")


class AppSettings:
    """Attribute access to billing's settings (one property per name in DEFAULTS): the
    project's value, else billing's default. An unknown name is an AttributeError."""

    def __init__(self):
        self._values: dict[str, object] = {}
        self._source = None  # the settings object the cached values came from

    def _get(self, name: str):
        # override_settings (and pytest-django's `settings`, also when it deletes one) swaps
        # the object behind django.conf.settings: a new one means nothing cached is valid.
        source = _LAZY_SETTINGS.get("_wrapped")
        if source is not self._source:
            self._values.clear()
            self._source = source
        try:
            return self._values[name]
        except KeyError:
            value = self._values[name] = getattr(django_settings, name, DEFAULTS[name])
            return value


for _name in DEFAULTS:
    setattr(AppSettings, _name, property(lambda self, _name=_name: self._get(_name)))
del _name

app_settings = AppSettings()


# --- BILLING_SIGNUP_GRANT ------------------------------------------------------------------------

# billing.models.MAX_CREDITS_PER_CHANGE and MAX_VALIDITY_DAYS (models imports this module, so
# not the other way round; tests/test_signup_grant.py holds them equal).
MAX_SIGNUP_CREDITS = 1_000_000_000
MAX_SIGNUP_DAYS = 36_500
_SIGNUP_GRANT = re.compile(r"(?P<credits>[0-9]{1,12})(?:/(?P<days>[0-9]{1,12})d)?")


@dataclass(frozen=True)
class SignupGrant:
    credits: int
    days: int | None  # None: never expires


def signup_grant(value=None) -> SignupGrant | None:
    """BILLING_SIGNUP_GRANT (or `value`) read: None when off, else what each new user gets.
    Raises ImproperlyConfigured, naming the setting, for anything else than "5" or "3/30d"."""
    value = app_settings.BILLING_SIGNUP_GRANT if value is None else value
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    match = _SIGNUP_GRANT.fullmatch(value.strip().lower()) if isinstance(value, str) else None
    if match is None:
        raise ImproperlyConfigured(
            'BILLING_SIGNUP_GRANT must be "<credits>" or "<credits>/<days>d" (e.g. "5" or "3/30d"), '
            f"or None; got {value!r}."
        )
    credits = int(match["credits"])
    days = int(match["days"]) if match["days"] is not None else None
    if not 1 <= credits <= MAX_SIGNUP_CREDITS:
        raise ImproperlyConfigured(
            f"BILLING_SIGNUP_GRANT must give from 1 to {MAX_SIGNUP_CREDITS:,} credits; got {value!r}."
        )
    if days is not None and not 1 <= days <= MAX_SIGNUP_DAYS:
        raise ImproperlyConfigured(
            f"BILLING_SIGNUP_GRANT's credits must stay valid from 1 to {MAX_SIGNUP_DAYS:,} days; got {value!r}."
        )
    return SignupGrant(credits, days)
