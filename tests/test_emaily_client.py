"""The original React client, unmodified, against /api/*: axios's CSRF names, legacy card tokens,
user-shaped answers, /auth/google, and a development proxy's origin. Through the HTTP client with
Django's CSRF checks on; the same calls from real axios in Chromium are in
tests/test_emaily_client_browser.py."""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client

from billing import ledger
from billing.models import Payment
from scripts import localstripe_server
from tests.http_forwarder import Forwarder
from tests.stripe_helpers import DECLINED, THREE_D_SECURE, VISA, card, legacy_token, post_json
from tests.test_google_login import CLIENT_ID, GOOGLE_USER, answer_google, google, google_keys, no_google_keys  # noqa: F401
from tests.test_settings import PRODUCTION, manage

STRIPE = "/api/stripe"
PASSWORD = "correct horse battery staple"  # tests/conftest.py's make_user


@pytest.fixture
def closed_stripe(settings):
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{localstripe_server.free_port()}"


@pytest.fixture
def browser(db):
    """A client that checks CSRF like a browser's requests are checked."""
    return Client(enforce_csrf_checks=True)


def axios_post(client, url, data, **extra):
    """What axios does: the XSRF-TOKEN cookie's value in an X-XSRF-TOKEN header, nothing else."""
    token = client.cookies["XSRF-TOKEN"].value if "XSRF-TOKEN" in client.cookies else None
    headers = {"HTTP_X_XSRF_TOKEN": token} if token else {}
    return post_json(client, url, data, **headers, **extra)


def load_app(client):
    """The client's first call on every page load (fetchUser)."""
    response = client.get("/api/current_user")
    assert response.status_code == HTTPStatus.OK
    return response


# --- CSRF under axios's names ----------------------------------------------------------------


def test_current_user_sets_both_csrf_cookies_in_step(browser):
    response = load_app(browser)
    django_cookie, axios_cookie = response.cookies["csrftoken"], response.cookies["XSRF-TOKEN"]
    assert axios_cookie.value == django_cookie.value
    assert len(axios_cookie.value) == 32
    assert not axios_cookie["httponly"]  # axios reads it from JavaScript
    assert axios_cookie["path"] == "/"
    assert axios_cookie["samesite"] == "Lax"
    assert "Cookie" in response["Vary"]


def test_axios_names_pass_csrf_and_buy(localstripe, browser, user):
    browser.force_login(user)
    load_app(browser)
    response = axios_post(browser, STRIPE, {"id": card(VISA)})
    assert response.status_code == HTTPStatus.OK, response.content
    assert response.json()["credits"] == 5


def test_djangos_own_names_still_work(closed_stripe, browser, user):
    browser.force_login(user)
    load_app(browser)
    token = browser.cookies["csrftoken"].value
    response = post_json(browser, STRIPE, {}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == HTTPStatus.BAD_REQUEST  # past CSRF, refused by the view
    assert response.json() == {"error": "Card details are missing."}


@pytest.mark.parametrize(
    "case",
    ["no header", "another token", "header without cookies"],
)
def test_a_post_without_a_valid_token_is_still_refused(closed_stripe, browser, user, case):
    browser.force_login(user)
    load_app(browser)
    real = browser.cookies["XSRF-TOKEN"].value
    headers = {
        "no header": {},
        "another token": {"HTTP_X_XSRF_TOKEN": "a" * 32},
        "header without cookies": {"HTTP_X_XSRF_TOKEN": real},
    }[case]
    if case == "header without cookies":
        del browser.cookies["csrftoken"]
        del browser.cookies["XSRF-TOKEN"]
    response = post_json(browser, STRIPE, {"id": "pm_card_visa"}, **headers)
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert not Payment.objects.exists()


def test_login_rotates_both_cookies_together(closed_stripe, browser, user):
    load_app(browser)
    before = browser.cookies["XSRF-TOKEN"].value
    response = browser.post(
        "/accounts/login/",
        {"login": user.email, "password": PASSWORD},
        HTTP_X_XSRF_TOKEN=before,
    )
    assert response.status_code == HTTPStatus.FOUND
    assert browser.session[SESSION_KEY] == str(user.pk)
    after = response.cookies["XSRF-TOKEN"].value
    assert after == response.cookies["csrftoken"].value
    assert after != before

    stale = post_json(browser, STRIPE, {}, HTTP_X_XSRF_TOKEN=before)
    assert stale.status_code == HTTPStatus.FORBIDDEN
    fresh = axios_post(browser, STRIPE, {})
    assert fresh.status_code == HTTPStatus.BAD_REQUEST  # past CSRF


def test_axios_cookie_follows_djangos_cookie_settings(settings, browser):
    settings.CSRF_COOKIE_SECURE = True
    settings.CSRF_COOKIE_HTTPONLY = True
    settings.CSRF_COOKIE_SAMESITE = "Strict"
    settings.CSRF_COOKIE_DOMAIN = "testserver"
    settings.CSRF_COOKIE_AGE = 3600
    response = load_app(browser)
    cookie = response.cookies["XSRF-TOKEN"]
    assert cookie["secure"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["domain"] == "testserver"
    assert cookie["max-age"] == 3600
    assert not cookie["httponly"]
    assert response.cookies["csrftoken"]["httponly"] is True  # Django's own cookie as configured


def test_a_page_that_already_set_csrftoken_gets_the_axios_cookie_too(browser):
    browser.get("/accounts/login/")  # the site's own form sets csrftoken
    token = browser.cookies["csrftoken"].value
    assert browser.cookies["XSRF-TOKEN"].value == token
    again = browser.get("/api/current_user")
    # In step already: the axios cookie is only renewed alongside Django's.
    assert again.cookies["XSRF-TOKEN"].value == again.cookies["csrftoken"].value == token


def test_anonymous_post_with_a_valid_pair_answers_401_json(closed_stripe, browser):
    load_app(browser)
    response = axios_post(browser, STRIPE, {"id": "pm_card_visa"})
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.json() == {"error": "Sign in first."}


# --- legacy card tokens ----------------------------------------------------------------------


def test_a_legacy_token_object_buys_the_default_pack(localstripe, signed_in_client, user):
    token = legacy_token(localstripe, VISA)
    response = post_json(signed_in_client, STRIPE, token)

    assert response.status_code == HTTPStatus.OK, response.content
    payment = Payment.objects.get(user=user)
    assert response.json() == {
        "id": user.pk,
        "email": user.email,
        "credits": 5,
        "payment": {"id": payment.pk, "status": "succeeded", "client_secret": None},
    }
    assert payment.status == Payment.Status.SUCCEEDED
    assert ledger.get_balance(user) == 5


def test_the_gateway_asks_stripe_for_a_payment_method_as_documented(localstripe, settings, signed_in_client, user):
    """The exact requests on the wire: card[token] to /v1/payment_methods, then that PaymentMethod
    (never the token) on the PaymentIntent."""
    recorder = Forwarder(localstripe).start()
    settings.STRIPE_API_BASE = recorder.url
    try:
        token = legacy_token(localstripe, VISA)
        response = post_json(signed_in_client, STRIPE, token)
    finally:
        recorder.stop()
    assert response.status_code == HTTPStatus.OK, response.content

    (create_pm, create_pi) = recorder.requests
    assert (create_pm.method, create_pm.path) == ("POST", "/v1/payment_methods")
    assert parse_qs(create_pm.body.decode()) == {"type": ["card"], "card[token]": [token["id"]]}
    assert create_pm.headers["Idempotency-Key"].startswith(f"token:{token['id']}:payment-method:")
    assert (create_pi.method, create_pi.path) == ("POST", "/v1/payment_intents")
    sent = parse_qs(create_pi.body.decode())
    assert sent["payment_method"][0].startswith("pm_")
    assert sent["amount"] == ["500"]


def test_charge_endpoint_still_takes_only_payment_methods(localstripe, signed_in_client, user):
    token = legacy_token(localstripe, VISA)
    response = post_json(signed_in_client, "/billing/charge/", {"pack": "starter", "payment_method": token["id"]})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert not Payment.objects.exists()


def test_an_unknown_token_answers_400_and_creates_nothing(localstripe, signed_in_client, user):
    response = post_json(signed_in_client, STRIPE, {"id": "tok_unknown123"})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json() == {"error": "No such token: 'tok_unknown123'"}
    assert not Payment.objects.exists()


def test_a_token_used_twice_pays_once(localstripe, signed_in_client, user):
    token = legacy_token(localstripe, VISA)
    assert post_json(signed_in_client, STRIPE, token).status_code == HTTPStatus.OK
    again = post_json(signed_in_client, STRIPE, token)
    assert again.status_code == HTTPStatus.BAD_REQUEST
    assert "more than once" in again.json()["error"]
    assert Payment.objects.count() == 1
    assert ledger.get_balance(user) == 5


def test_stripe_down_while_turning_a_token_answers_503_and_creates_nothing(closed_stripe, signed_in_client, user):
    response = post_json(signed_in_client, STRIPE, {"id": "tok_visa"})
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert response.json()["error"]
    assert not Payment.objects.exists()


def test_a_declined_tokens_card_answers_402_with_the_message(localstripe, signed_in_client, user):
    response = post_json(signed_in_client, STRIPE, legacy_token(localstripe, DECLINED))
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert response.json() == {"error": "Your card was declined. Please use another card or contact your bank."}
    assert Payment.objects.get(user=user).status == Payment.Status.FAILED
    assert ledger.get_balance(user) == 0


def test_a_3ds_tokens_card_answers_user_shaped(localstripe, signed_in_client, user):
    response = post_json(signed_in_client, STRIPE, legacy_token(localstripe, THREE_D_SECURE))
    assert response.status_code == HTTPStatus.OK
    body = response.json()
    assert (body["id"], body["email"], body["credits"]) == (user.pk, user.email, 0)
    assert body["payment"]["status"] == "requires_action"
    assert body["payment"]["client_secret"]


# --- a React development server's proxy ------------------------------------------------------

PROXY_ORIGIN = "http://localhost:3000"


def proxied_post(client, data):
    """Through create-react-app's proxy: the browser's Origin is the dev server's, the Host the API's."""
    return axios_post(client, STRIPE, data, HTTP_ORIGIN=PROXY_ORIGIN)


def test_a_proxy_origin_is_refused_until_trusted(closed_stripe, browser, user, caplog):
    browser.force_login(user)
    load_app(browser)
    response = proxied_post(browser, {})
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert f"Origin checking failed - {PROXY_ORIGIN} does not match any trusted origins" in caplog.text


def test_a_trusted_proxy_origin_works(settings, closed_stripe, browser, user):
    settings.CSRF_TRUSTED_ORIGINS = [PROXY_ORIGIN]
    browser.force_login(user)
    load_app(browser)
    response = proxied_post(browser, {})
    assert response.status_code == HTTPStatus.BAD_REQUEST  # past CSRF, refused by the view


def test_trusted_origins_come_from_the_environment():
    code = "from django.conf import settings; print(settings.CSRF_TRUSTED_ORIGINS)"
    env = {**PRODUCTION, "CSRF_TRUSTED_ORIGINS": "http://localhost:3000, https://app.example.com"}
    result = manage("shell", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['http://localhost:3000', 'https://app.example.com']"


# --- /auth/google ----------------------------------------------------------------------------


def test_auth_google_leads_into_allauths_google_flow(db, client, google_keys, google):  # noqa: F811
    start = client.get("/auth/google", {"next": "/billing/"})
    assert start.status_code == HTTPStatus.FOUND
    assert start["Location"] == "/accounts/google/login/?next=%2Fbilling%2F"
    page = client.get(start["Location"])
    assert page.status_code == HTTPStatus.OK  # allauth asks to continue (no sign-in on a bare GET)

    to_google = client.post(start["Location"])
    authorize = urlsplit(to_google["Location"])
    assert authorize.netloc == "accounts.google.com"
    params = parse_qs(authorize.query)
    assert params["client_id"] == [CLIENT_ID]

    # Google comes back to the original app's callback address; allauth's view finishes the sign-in.
    answer_google(google, code="c1", user_info=GOOGLE_USER)
    done = client.get("/auth/google/callback", {"code": "c1", "state": params["state"][0]})
    assert done.status_code == HTTPStatus.FOUND
    assert done["Location"] == "/billing/"
    assert client.get("/api/current_user").json()["email"] == GOOGLE_USER["email"]


def test_auth_google_callback_with_a_forged_state_signs_nobody_in(db, client, google_keys, google):  # noqa: F811
    client.post("/accounts/google/login/")
    response = client.get("/auth/google/callback", {"code": "c", "state": "forged"})
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert client.session.get(SESSION_KEY) is None
    assert not google.calls


@pytest.mark.parametrize("path", ["/auth/google", "/auth/google/callback"])
def test_auth_google_without_keys_is_a_clear_page(db, client, no_google_keys, path):  # noqa: F811
    response = client.get(path, {"code": "c", "state": "s"})
    assert response.status_code == HTTPStatus.NOT_FOUND
    assert b"Google sign-in is not available" in response.content
    assert b'href="/accounts/login/"' in response.content
