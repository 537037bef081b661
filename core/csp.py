"""The site's Content-Security-Policy, as directives (Django 6's SECURE_CSP shape): scripts only
from this site and Stripe.js, nothing inline. core/settings.py builds SECURE_CSP with it and
core/middleware.py sends it; billing's system check reads SECURE_CSP to make sure Stripe.js is allowed."""

from urllib.parse import urlsplit


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def directives(stripe_js_url: str | None, stripe_api_base: str | None) -> dict[str, list[str]]:
    stripe_js = _origin(stripe_js_url)
    # Stripe.js talks to Stripe's API from the browser; in development that is localstripe.
    stripe_api = _origin(stripe_api_base) or "https://api.stripe.com"
    policy = {
        "default-src": ["'self'"],
        "script-src": ["'self'", stripe_js],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "https://*.stripe.com"],
        "frame-src": [stripe_js, "https://hooks.stripe.com"],
        "connect-src": ["'self'", stripe_api, stripe_js],
        "form-action": ["'self'", "https://accounts.google.com"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'self'"],
        "object-src": ["'none'"],
    }
    return {name: list(dict.fromkeys(v for v in values if v)) for name, values in policy.items()}
