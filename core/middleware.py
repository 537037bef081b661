"""Content-Security-Policy: the header for settings.SECURE_CSP (built in core/csp.py)."""

from functools import lru_cache

from django.conf import settings


def build_policy(*, inline_styles: bool = False) -> str:
    policy = settings.SECURE_CSP
    if inline_styles:
        policy = {**policy, "style-src": [*policy.get("style-src", []), "'unsafe-inline'"]}
    return _render(tuple((name, tuple(values)) for name, values in policy.items()))


# Keyed on the directives, so a test that points Stripe at localstripe after the server started
# (pytest-django's `settings` with `live_server`) gets its own policy.
@lru_cache(maxsize=8)
def _render(directives: tuple) -> str:
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        # The admin ships inline scripts and styles; it is staff-only and keeps Django's defaults.
        if not request.path.startswith("/admin/"):
            # With DEBUG on, a 404 or 500 is Django's technical page, styled inline: let its styles
            # apply there (development only; with DEBUG off templates/404.html uses the stylesheet).
            technical_page = settings.DEBUG and response.status_code in (404, 500)
            response.headers.setdefault("Content-Security-Policy", build_policy(inline_styles=technical_page))
        return response
