"""Content-Security-Policy: scripts only from this site and Stripe.js, nothing inline."""

from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def build_policy() -> str:
    return _policy(settings.STRIPE_JS_URL, settings.STRIPE_API_BASE)


# Keyed on the settings it reads, so a test that points Stripe at localstripe after the server
# started (pytest-django's `settings` with `live_server`) still gets a matching policy.
@lru_cache(maxsize=8)
def _policy(stripe_js_url: str | None, stripe_api_base: str | None) -> str:
    stripe_js = _origin(stripe_js_url)
    # Stripe.js talks to Stripe's API from the browser; in development that is localstripe.
    stripe_api = _origin(stripe_api_base) or "https://api.stripe.com"
    script = ["'self'", stripe_js]
    frame = [stripe_js, "https://hooks.stripe.com"]
    connect = ["'self'", stripe_api, stripe_js]
    directives = {
        "default-src": ["'self'"],
        "script-src": script,
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "https://*.stripe.com"],
        "frame-src": frame,
        "connect-src": connect,
        "form-action": ["'self'", "https://accounts.google.com"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'self'"],
        "object-src": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(dict.fromkeys(v for v in values if v))}" for name, values in directives.items())


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        # The admin ships inline scripts and styles; it is staff-only and keeps Django's defaults.
        if not request.path.startswith("/admin/"):
            response.headers.setdefault("Content-Security-Policy", build_policy())
        return response
