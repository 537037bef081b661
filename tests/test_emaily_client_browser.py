"""The original Emaily React client's calls, made by the real axios in headless Chromium.

A page served by the test server loads axios from npm (0.16.2, the version the client pins, and a
current 1.x; tests/emaily_client/package.json) and the client's own action creators
(tests/emaily_client/actions.js). No header or cookie is set by hand: axios finds the CSRF cookie
itself, as in the client. Cards come in as the client gets them: the token object of legacy
Checkout (made at localstripe with the publishable key) or a PaymentMethod object.

Run directly against the server, and through a stand-in for the React development server's proxy
(a different origin), which works only once that origin is in CSRF_TRUSTED_ORIGINS.
"""

from __future__ import annotations

import json

import pytest
from pytest_django.live_server_helper import LiveServer

from billing.models import Payment
from tests.emaily_client_urls import AXIOS_VERSIONS, CLIENT, SCRIPTS
from tests.http_forwarder import Forwarder
from tests.seed import starter_pack
from tests.stripe_helpers import DECLINED, THREE_D_SECURE, VISA, card, legacy_token
from tests.test_browser import TIMEOUT_MS, chromium, sign_up  # noqa: F401

pytestmark = pytest.mark.browser

PINNED = {"axios016": "0.16.2"}


@pytest.fixture(scope="module")
def axios_installed():
    missing = [str(p.relative_to(CLIENT.parent.parent)) for p in SCRIPTS.values() if not p.exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: run `npm ci --prefix tests/emaily_client` (.ci/run does)")


@pytest.fixture
def emaily_urls(settings, localstripe, transactional_db, axios_installed):
    settings.ROOT_URLCONF = "tests.emaily_client_urls"
    starter_pack()


@pytest.fixture
def open_browser(chromium):  # noqa: F811
    contexts = []

    def open_at(base_url):
        context = chromium.new_context(base_url=base_url)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.problems = []
        page.on("pageerror", lambda exc: page.problems.append(str(exc)))
        return page

    yield open_at
    for context in contexts:
        context.close()


@pytest.fixture
def proxy_server(settings, emaily_urls):
    """A fresh server (Django's CSRF middleware reads CSRF_TRUSTED_ORIGINS once per server) behind
    a forwarder on another origin, like create-react-app's dev server with `proxy` set."""
    started = []

    def start(*, trusted: bool):
        forwarder = Forwarder().start()
        settings.CSRF_TRUSTED_ORIGINS = [forwarder.url] if trusted else []
        server = LiveServer("localhost")
        forwarder.target = server.url
        started.append((forwarder, server))
        return forwarder

    yield start
    for forwarder, server in started:
        forwarder.stop()
        server.stop()


class EmailyClient:
    """The client's page and its two action creators, run in the browser."""

    def __init__(self, page, axios):
        self.page, self.axios = page, axios

    def load(self):
        self.page.goto(f"/_emaily/{self.axios}/")
        self.page.wait_for_function("() => window.emaily !== undefined")

    def fetch_user(self):
        return self.page.evaluate("() => emaily.fetchUser()")

    def handle_token(self, token: dict):
        return self.page.evaluate("token => emaily.handleToken(token)", token)

    def header(self) -> str:
        return self.page.locator("#header").inner_text()


def payment_method_object(number: str) -> dict:
    """What Stripe.js's createPaymentMethod resolves with, as the client would post it."""
    return {"id": card(number), "object": "payment_method", "type": "card"}


def buy_and_check(client: EmailyClient, localstripe: str, email: str):
    """The purchases of the original client, with the answers it needs."""
    user = client.fetch_user()["payload"]
    assert (user["email"], user["credits"]) == (email, 0)

    bought = client.handle_token(legacy_token(localstripe, VISA, email=email))
    assert bought["payload"]["credits"] == 5, bought
    assert bought["payload"]["payment"]["status"] == "succeeded"
    assert client.header() == "Credits: 5"

    bought = client.handle_token(payment_method_object(VISA))
    assert bought["payload"]["credits"] == 10, bought
    assert client.header() == "Credits: 10"

    secure = client.handle_token(payment_method_object(THREE_D_SECURE))["payload"]
    assert {key: secure[key] for key in ("id", "email", "credits")} == {**user, "credits": 10}
    assert secure["payment"]["status"] == "requires_action"
    assert secure["payment"]["client_secret"]
    assert client.header() == "Credits: 10"  # never a blank "Credits: "

    declined = client.handle_token(legacy_token(localstripe, DECLINED, email=email))
    assert declined == {
        "rejected": True,
        "status": 402,
        "data": {"error": "Your card was declined. Please use another card or contact your bank."},
    }
    assert client.header() == "Credits: 10"

    statuses = sorted(Payment.objects.filter(user__email=email).values_list("status", flat=True))
    assert statuses == ["failed", "requires_action", "succeeded", "succeeded"]


def test_npm_installed_the_pinned_axios_versions(axios_installed):
    for alias, version in PINNED.items():
        package = json.loads((CLIENT / "node_modules" / alias / "package.json").read_text())
        assert (package["name"], package["version"]) == ("axios", version)
    current = json.loads((CLIENT / "node_modules" / "axios" / "package.json").read_text())
    assert current["version"].startswith("1.")


@pytest.mark.parametrize("axios", AXIOS_VERSIONS)
def test_the_original_clients_calls_work_unmodified(emaily_urls, live_server, localstripe, open_browser, axios):
    page = open_browser(live_server.url)
    client = EmailyClient(page, axios)
    email = f"react-{axios}@example.com"

    client.load()
    assert client.fetch_user() == {"payload": None}  # signed out: JSON null
    assert client.header() == "Login With Google"

    sign_up(page, email)  # the site's own sign-up page; login rotates the CSRF cookies
    client.load()
    buy_and_check(client, localstripe, email)

    page.goto("/api/logout")  # the client's "Logout" link
    client.load()
    assert client.fetch_user() == {"payload": None}
    assert not page.problems, page.problems


@pytest.mark.parametrize("axios", AXIOS_VERSIONS)
def test_through_a_trusted_dev_proxy(proxy_server, localstripe, open_browser, axios):
    proxy = proxy_server(trusted=True)
    page = open_browser(proxy.url)
    client = EmailyClient(page, axios)
    email = f"proxied-{axios}@example.com"

    client.load()
    assert client.fetch_user() == {"payload": None}
    sign_up(page, email)
    client.load()
    buy_and_check(client, localstripe, email)
    # Every call went through the proxy's origin.
    assert any(r.path == "/api/stripe" and r.headers.get("Origin") == proxy.url for r in proxy.requests)
    assert not page.problems, page.problems


def test_an_untrusted_dev_proxy_is_refused(proxy_server, localstripe, open_browser, caplog):
    proxy = proxy_server(trusted=False)
    page = open_browser(proxy.url)
    client = EmailyClient(page, "axios")

    client.load()
    assert client.fetch_user() == {"payload": None}  # reading works
    refused = client.handle_token(legacy_token(localstripe, VISA))
    assert (refused["rejected"], refused["status"]) == (True, 403)
    assert f"Origin checking failed - {proxy.url} does not match any trusted origins" in caplog.text
    assert not Payment.objects.exists()
