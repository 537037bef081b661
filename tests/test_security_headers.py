"""Security headers with DEBUG off (as the tests and production run): HSTS on HTTPS, a referrer
policy, no framing, no sniffing, and a Content-Security-Policy that allows Stripe.js and nothing
inline, checked against the scripts the pages actually load.

`manage.py check --deploy` under production settings is tests/test_settings.py's job."""

import re
from http import HTTPStatus
from urllib.parse import urljoin, urlsplit

import pytest
from django.conf import settings

from core import csp as core_csp

STRIPE_JS = "https://js.stripe.com"
PAGES = [
    ("/", True),
    ("/", False),
    ("/billing/", True),
    ("/fortune/", True),
    ("/fortune/long/", True),
    ("/api/current_user", True),
    ("/accounts/login/", False),
]


def csp(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy", "")
    directives = {}
    for part in filter(None, (p.strip() for p in header.split(";"))):
        name, *values = part.split()
        directives[name] = values
    return directives


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def test_debug_is_off_in_the_tested_settings():
    assert settings.DEBUG is False


@pytest.mark.parametrize(("path", "signed_in"), PAGES)
def test_hsts_and_the_other_headers_on_https(client, user, path, signed_in):
    if signed_in:
        client.force_login(user)
    response = client.get(path, secure=True)
    assert response.status_code == HTTPStatus.OK, path
    hsts = response.headers["Strict-Transport-Security"]
    max_age = int(re.search(r"max-age=(\d+)", hsts).group(1))
    assert max_age >= 31_536_000
    assert "includeSubDomains" in hsts
    assert "preload" in hsts
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "Content-Security-Policy" in response.headers


def test_http_is_redirected_to_https_when_configured(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/billing/")
    assert response.status_code == HTTPStatus.MOVED_PERMANENTLY
    assert response["Location"].startswith("https://")


def test_cookies_are_secure_and_http_only(client, user):
    response = client.post("/accounts/login/", {"login": user.email, "password": "correct horse battery staple"})
    assert response.status_code == HTTPStatus.FOUND
    session = response.cookies[settings.SESSION_COOKIE_NAME]
    assert session["secure"] and session["httponly"]
    assert session["samesite"] == "Lax"
    assert settings.CSRF_COOKIE_SECURE is True


def test_the_policy_allows_stripe_js_and_no_inline_script(signed_in_client):
    policy = csp(signed_in_client.get("/billing/"))
    assert STRIPE_JS in policy["script-src"]
    assert "'self'" in policy["script-src"]
    assert STRIPE_JS in policy["frame-src"]  # the card Element lives in Stripe's iframe
    assert "https://api.stripe.com" in policy["connect-src"]
    for directive in ("script-src", "default-src"):
        assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "http:", "https:"} & set(policy[directive])
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]


def test_the_policy_built_for_a_local_stripe_allows_it(signed_in_client, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:8420"
    settings.STRIPE_JS_URL = "http://127.0.0.1:8420/js.stripe.com/v3/"
    settings.SECURE_CSP = core_csp.directives(settings.STRIPE_JS_URL, settings.STRIPE_API_BASE)
    policy = csp(signed_in_client.get("/billing/"))
    assert "http://127.0.0.1:8420" in policy["script-src"]
    assert "http://127.0.0.1:8420" in policy["connect-src"]


@pytest.mark.parametrize("stripe_js_url", [None, "http://127.0.0.1:8420/js.stripe.com/v3/"])
def test_every_script_the_billing_page_loads_is_allowed_by_its_policy(signed_in_client, settings, stripe_js_url):
    """The page's own <script> tags against its own header: an external script the policy does
    not list, or an inline script (which the policy forbids), would break Stripe.js silently."""
    if stripe_js_url:
        settings.STRIPE_API_BASE = origin(stripe_js_url)
        settings.STRIPE_JS_URL = stripe_js_url
        settings.SECURE_CSP = core_csp.directives(settings.STRIPE_JS_URL, settings.STRIPE_API_BASE)
    response = signed_in_client.get("/billing/")
    html = response.content.decode()
    allowed = set(csp(response)["script-src"])
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S | re.I)
    assert scripts, "the billing page loads Stripe.js and its own script"
    sources = []
    for attrs, body in scripts:
        src = re.search(r"""\bsrc=["']([^"']+)["']""", attrs)
        if src is None:
            kind = re.search(r"""\btype=["']([^"']+)["']""", attrs)
            # JSON data blocks are not executed; anything else inline would be blocked.
            assert kind and kind.group(1) == "application/json", f"inline script on /billing/: {body[:80]!r}"
            continue
        url = urljoin("https://testserver/billing/", src.group(1))
        sources.append(url)
        same_site = origin(url) == "https://testserver"
        assert (same_site and "'self'" in allowed) or origin(url) in allowed, f"{url} is not allowed by {allowed}"
    assert any(url.startswith(settings.STRIPE_JS_URL) for url in sources), sources
    assert not re.search(r"""\son[a-z]+\s*=\s*["']""", html), "inline event handlers are blocked by the policy"


def test_the_admin_keeps_djangos_own_framing_protection(admin_client):
    response = admin_client.get("/admin/")
    assert response.status_code == HTTPStatus.OK
    assert response.headers["X-Frame-Options"] == "DENY"
