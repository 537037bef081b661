"""Every setting billing reads, with its default: the one place billing looks at Django's settings.

    from billing.conf import app_settings
    app_settings.BILLING_DEFAULT_PACK

A project sets only the three Stripe keys (plus `STRIPE_API_BASE` when it talks to a Stripe
stand-in); docs/INSTALL.md has the table. What is missing or malformed is reported by
billing/checks.py at start-up (`manage.py check`), never as an AttributeError at the first request.

Reads are live: a value is looked up in `django.conf.settings` on first use and kept on this
object until Django's `setting_changed` signal (override_settings, pytest-django's `settings`
fixture) names it. So a read on a hot path (the ledger's BILLING_LEDGER_PREPARED_STATEMENTS on
every write) is a plain attribute read, as cheap as `settings.X`.
"""

from __future__ import annotations

from django.conf import settings as django_settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, object] = {
    # Stripe's keys have no usable default: checks.py reports them missing (billing.E001-E003).
    "STRIPE_SECRET_KEY": "",
    "STRIPE_PUBLISHABLE_KEY": "",
    "STRIPE_WEBHOOK_SECRET": "",
    # None means the real Stripe API; development and tests point it at a stand-in (localstripe).
    "STRIPE_API_BASE": None,
    "STRIPE_JS_URL": "https://js.stripe.com/v3/",
    "STRIPE_TIMEOUT_SECONDS": 20,
    "STRIPE_MAX_NETWORK_RETRIES": 2,
    # The pack `/api/stripe` buys and the Add Credits dialog selects first.
    "BILLING_DEFAULT_PACK": "starter",
    "BILLING_LEDGER_PAGE_SIZE": 25,
    # PostgreSQL: the ledger's statement prepared once per connection; off behind PgBouncer in
    # transaction mode before 1.21, which cannot keep prepared statements.
    "BILLING_LEDGER_PREPARED_STATEMENTS": True,
    # Charge attempts per signed-in user and window, "<requests>/<seconds>" or "off".
    "BILLING_CHARGE_RATE_LIMIT": "10/60",
    # The template billing/base.html extends; a stand-alone layout is used when it does not exist.
    "BILLING_BASE_TEMPLATE": "base.html",
    # Where billing's pages send people: "Back home" on the not-enough-credits page.
    "BILLING_HOME_URL": "/",
    # Django's own settings billing reads, with Django's defaults.
    "AUTH_USER_MODEL": "auth.User",
    "LOGOUT_REDIRECT_URL": None,
    # Read, never required: the project's Content-Security-Policy (Django 6's SECURE_CSP, or
    # django-csp 4's CONTENT_SECURITY_POLICY), which billing.E009 checks lets Stripe.js work.
    "SECURE_CSP": None,
    "CONTENT_SECURITY_POLICY": None,
}


class AppSettings:
    """Attribute access to billing's settings: the project's value, else billing's default."""

    def __getattr__(self, name: str):
        # Only reached when the value is not cached on the instance yet.
        try:
            default = DEFAULTS[name]
        except KeyError:
            raise AttributeError(f"billing has no setting {name!r}") from None
        value = getattr(django_settings, name, default)
        self.__dict__[name] = value
        return value

    def reload(self, name: str | None = None) -> None:
        """Forget cached values (one, or all), so the next read sees Django's settings again."""
        if name is None:
            self.__dict__.clear()
        else:
            self.__dict__.pop(name, None)


app_settings = AppSettings()


def _setting_changed(*, setting: str, **kwargs) -> None:
    if setting in DEFAULTS:
        app_settings.reload(setting)


setting_changed.connect(_setting_changed, dispatch_uid="billing.conf.setting_changed")
