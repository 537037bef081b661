"""System checks: a missing or malformed billing setting is reported by `manage.py check` (and
before `migrate`, `runserver`, the test run) with the setting's name, never as an error at the
first request. The ids are stable; docs/INSTALL.md lists them with the settings.

E001/E002 STRIPE_SECRET_KEY missing / not a secret key (sk_..., or a restricted key rk_...)
E003/E004 STRIPE_PUBLISHABLE_KEY missing / not pk_...
E005/E006 STRIPE_WEBHOOK_SECRET missing / not whsec_...
E007      BILLING_CHARGE_RATE_LIMIT malformed
E008      a numeric setting that is not a number in its range
E009      the project's Content-Security-Policy (SECURE_CSP, or django-csp's CONTENT_SECURITY_POLICY)
          would block Stripe.js
E010      BILLING_DEFAULT_PACK is not a pack slug
E011      BILLING_BASE_TEMPLATE names a template that does not exist
E012      STRIPE_JS_URL / STRIPE_API_BASE is not an http(s) URL
E013      one Stripe call with its retries can outlast the web worker's timeout (the page would get
          the server's bare error instead of billing's JSON 503)
E014      BILLING_SIGNUP_GRANT malformed (not "5", "3/30d" or None)
E016      BILLING_SITE_URL is set but not an absolute http(s) URL (links in emails must be absolute)
W001      BILLING_SITE_URL is empty while BILLING_RECEIPT_EMAILS is on: receipts would carry links
          without the site's address
E015      TASKS names no "default" backend, or one that cannot be loaded: billing's background work
          (billing.tasks) goes to the default backend. With no TASKS at all, django-tasks runs each
          task where it is enqueued (its ImmediateBackend), which is a working default: the
          periodic command then does the work itself (docs/INSTALL.md "Background work").
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from billing.conf import DEFAULTS, app_settings, signup_grant

KEYS = (
    # setting, (missing id, malformed id), accepted prefixes, what it is
    (
        "STRIPE_SECRET_KEY",
        ("billing.E001", "billing.E002"),
        ("sk_", "rk_"),
        "a secret key (sk_...) or restricted key (rk_...)",
    ),
    ("STRIPE_PUBLISHABLE_KEY", ("billing.E003", "billing.E004"), ("pk_",), "a publishable key (pk_...)"),
    ("STRIPE_WEBHOOK_SECRET", ("billing.E005", "billing.E006"), ("whsec_",), "a webhook signing secret (whsec_...)"),
)
DASHBOARD = "Copy it from the Stripe Dashboard (Developers > API keys, or the webhook endpoint's page)."

# setting, kind, minimum
NUMBERS = (
    ("STRIPE_TIMEOUT_SECONDS", float, 0.1),
    ("STRIPE_MAX_NETWORK_RETRIES", int, 0),
    ("BILLING_WEB_TIMEOUT_SECONDS", int, 1),
    ("BILLING_LEDGER_PAGE_SIZE", int, 1),
    # Less than a few minutes would cancel payments whose customer is still at the bank.
    ("BILLING_ABANDONED_AFTER", int, 300),
    ("BILLING_PAYMENTS_PAGE_SIZE", int, 1),
)
# The same rule billing.charges applies to a pack slug a client sends.
PACK_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,50}")


@checks.register()
def check_stripe_keys(app_configs=None, **kwargs):
    errors = []
    for name, (missing_id, malformed_id), prefixes, what in KEYS:
        value = getattr(app_settings, name)
        if not isinstance(value, str) or not value.strip():
            errors.append(checks.Error(f"{name} is not set.", hint=f"Set it to {what}. {DASHBOARD}", id=missing_id))
        elif not value.startswith(prefixes):
            errors.append(
                checks.Error(
                    f"{name} does not look like {what}: it starts with {value[:4]!r}.",
                    hint=f"Check that the keys are not swapped. {DASHBOARD}",
                    id=malformed_id,
                )
            )
    return errors


@checks.register()
def check_rate_limit(app_configs=None, **kwargs):
    from billing.ratelimit import parse_rate  # the limiter's own parser: the check and the limiter agree

    try:
        parse_rate(app_settings.BILLING_CHARGE_RATE_LIMIT, name="BILLING_CHARGE_RATE_LIMIT")
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="billing.E007")]
    return []


@checks.register()
def check_numbers(app_configs=None, **kwargs):
    errors = []
    for name, kind, minimum in NUMBERS:
        value = getattr(app_settings, name)
        try:
            if isinstance(value, bool) or (kind is int and isinstance(value, float)):
                raise ValueError
            number = kind(value)
        except (TypeError, ValueError):
            number = None
        if number is None or number < minimum or number != number:  # NaN is no timeout either
            errors.append(
                checks.Error(
                    f"{name} must be a {'whole ' if kind is int else ''}number of at least {minimum}; got {value!r}.",
                    hint=f"The default is {DEFAULTS[name]!r}.",
                    id="billing.E008",
                )
            )
    return errors


@checks.register()
def check_signup_grant(app_configs=None, **kwargs):
    try:
        signup_grant()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), hint="Remove the setting for no sign-up bonus.", id="billing.E014")]
    return []


@checks.register()
def check_urls(app_configs=None, **kwargs):
    errors = []
    for name in ("STRIPE_JS_URL", "STRIPE_API_BASE"):
        value = getattr(app_settings, name)
        if value is None and name == "STRIPE_API_BASE":
            continue  # the real Stripe API
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            errors.append(checks.Error(f"{name} must be an http(s) URL; got {value!r}.", id="billing.E012"))
    return errors


@checks.register()
def check_site_url(app_configs=None, **kwargs):
    """Emails are read away from the site: their links need its scheme and host."""
    value = app_settings.BILLING_SITE_URL
    if not value:
        if app_settings.BILLING_RECEIPT_EMAILS:
            return [
                checks.Warning(
                    "BILLING_SITE_URL is empty: the links in receipt emails would have no address.",
                    hint='Set it to the site\'s address, e.g. "https://example.com".',
                    id="billing.W001",
                )
            ]
        return []
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        return [
            checks.Error(
                f'BILLING_SITE_URL must be an absolute http(s) URL such as "https://example.com"; got {value!r}.',
                id="billing.E016",
            )
        ]
    return []


@checks.register(checks.Tags.security)
def check_content_security_policy(app_configs=None, **kwargs):
    """Stripe.js must be allowed to load (script-src), draw the card form (frame-src) and reach
    Stripe's API (connect-src). Only a policy declared in settings can be checked."""
    directives = declared_csp()
    if not directives or not isinstance(app_settings.STRIPE_JS_URL, str):
        return []
    stripe_js = _origin(app_settings.STRIPE_JS_URL)
    stripe_api = _origin(app_settings.STRIPE_API_BASE) or "https://api.stripe.com"
    needed = (
        ("script-src", stripe_js, ("script-src", "default-src")),
        (
            "frame-src",
            stripe_js,
            ("frame-src", "child-src", "default-src"),
        ),
        ("connect-src", stripe_api, ("connect-src", "default-src")),
    )
    errors = []
    for directive, origin, fallbacks in needed:
        sources = next((directives[name] for name in fallbacks if name in directives), None)
        if sources is not None and not _allows(sources, origin):
            errors.append(
                checks.Error(
                    f"The Content-Security-Policy's {directive} does not allow {origin}: Stripe.js cannot work.",
                    hint=f"Add {origin!r} to {directive} in SECURE_CSP (or CONTENT_SECURITY_POLICY).",
                    id="billing.E009",
                )
            )
    return errors


@checks.register()
def check_default_pack(app_configs=None, **kwargs):
    value = app_settings.BILLING_DEFAULT_PACK
    if not isinstance(value, str) or not PACK_SLUG.fullmatch(value):
        return [
            checks.Error(
                f"BILLING_DEFAULT_PACK must be a pack slug (letters, digits, '-' and '_', at most 50); got {value!r}.",
                id="billing.E010",
            )
        ]
    return []


@checks.register(checks.Tags.templates)
def check_base_template(app_configs=None, **kwargs):
    from billing.pages import base_template_exists

    name = app_settings.BILLING_BASE_TEMPLATE
    if name == DEFAULTS["BILLING_BASE_TEMPLATE"]:
        return []  # without a base.html billing uses its own layout
    if not isinstance(name, str) or not name or not base_template_exists(name):
        return [
            checks.Error(
                f"BILLING_BASE_TEMPLATE names a template that does not exist: {name!r}.",
                hint="Name your site's base template, or remove the setting (base.html, else billing's own layout).",
                id="billing.E011",
            )
        ]
    return []


# --- Content-Security-Policy helpers ------------------------------------------------------------


def declared_csp() -> dict[str, list[str]] | None:
    """The project's policy as {directive: [sources]}: Django 6's SECURE_CSP, or django-csp 4's
    CONTENT_SECURITY_POLICY["DIRECTIVES"]; None when the project declares none."""
    policy = app_settings.SECURE_CSP
    if not policy:
        csp = app_settings.CONTENT_SECURITY_POLICY
        policy = csp.get("DIRECTIVES") if isinstance(csp, dict) else None
    if not isinstance(policy, dict):
        return None
    directives = {}
    for name, sources in policy.items():
        if isinstance(sources, str):
            sources = sources.split()
        directives[str(name).lower().replace("_", "-")] = [str(source) for source in sources or ()]
    return directives


def _origin(url) -> str | None:
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def _allows(sources: list[str], origin: str | None) -> bool:
    """Whether a CSP source list admits `origin` (scheme://host[:port]): an exact origin, a
    host-only source, a *. wildcard host, a bare scheme ("https:"), or "*"."""
    if origin is None:
        return True
    scheme, host = origin.split("://", 1)
    for source in sources:
        source = source.strip().rstrip("/")
        if source in ("*", f"{scheme}:"):
            return True
        if source.startswith("'"):
            continue  # 'self', 'none', nonces and hashes never admit another origin
        src_scheme, _, src_host = source.rpartition("://")
        if src_scheme and src_scheme != scheme:
            continue
        src_host = src_host.split("/", 1)[0]
        if src_host == host or (src_host.startswith("*.") and host.endswith(src_host[1:])):
            return True
    return False


# Seconds a request needs beside the Stripe call (database work, the answer) before the worker's timeout.
WEB_TIMEOUT_MARGIN = 5


@checks.register()
def check_stripe_fits_the_web_timeout(app_configs=None, **kwargs):
    from billing.stripe_gateway import worst_case_seconds

    try:
        timeout = float(app_settings.STRIPE_TIMEOUT_SECONDS)
        retries = int(app_settings.STRIPE_MAX_NETWORK_RETRIES)
        web = float(app_settings.BILLING_WEB_TIMEOUT_SECONDS)
    except (TypeError, ValueError):
        return []  # E008 names the setting that is not a number
    worst = worst_case_seconds(timeout=timeout, retries=retries)
    if worst + WEB_TIMEOUT_MARGIN <= web:
        return []
    return [
        checks.Error(
            f"A Stripe call can take up to {worst:.1f} s ({retries + 1} attempts of STRIPE_TIMEOUT_SECONDS={timeout:g} "
            f"plus backoff), which does not end {WEB_TIMEOUT_MARGIN} s before BILLING_WEB_TIMEOUT_SECONDS={web:g}.",
            hint="Lower STRIPE_TIMEOUT_SECONDS or STRIPE_MAX_NETWORK_RETRIES, or raise the web worker's timeout "
            "(gunicorn --timeout) and BILLING_WEB_TIMEOUT_SECONDS with it.",
            id="billing.E013",
        )
    ]


@checks.register()
def check_task_backend(app_configs=None, **kwargs):
    from django_tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends
    from django_tasks.exceptions import InvalidTaskBackendError

    hint = 'Set TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}} (docs/INSTALL.md).'
    tasks = app_settings.TASKS
    if tasks is None:
        return []  # django-tasks' own default: tasks run where they are enqueued
    if not isinstance(tasks, dict) or DEFAULT_TASK_BACKEND_ALIAS not in tasks:
        return [
            checks.Error(
                "TASKS has no 'default' backend, where billing enqueues its tasks.", hint=hint, id="billing.E015"
            )
        ]
    try:
        task_backends[DEFAULT_TASK_BACKEND_ALIAS]
    except (InvalidTaskBackendError, KeyError, TypeError, ImportError) as exc:
        return [checks.Error(f"TASKS' default backend cannot be loaded: {exc}", hint=hint, id="billing.E015")]
    return []
