"""Google sign-in through allauth's real login and callback views.

Only Google's side is stood in for: its token endpoint and its userinfo endpoint are answered
locally by `responses` (any other outgoing HTTP request fails the test). The token answer has no
id_token, so allauth's Google adapter asks the userinfo endpoint who signed in, as it does when
Google leaves the id_token out.
"""

import copy
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from allauth.socialaccount.models import SocialAccount
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.test import override_settings
from responses import matchers

from accounts.models import User
from billing.ledger import get_balance
from billing.models import Profile

pytestmark = pytest.mark.django_db

CLIENT_ID = "test-client-id.apps.googleusercontent.com"
CLIENT_SECRET = "test-client-secret"
TOKEN_URL = "https://oauth2.googleapis.com/token"
USERINFO_URL = "https://www.googleapis.com/oauth2/v2/userinfo"
GOOGLE_USER = {
    "id": "108000000000000000001",
    "email": "grace@example.com",
    "verified_email": True,
    "name": "Grace Hopper",
    "given_name": "Grace",
    "family_name": "Hopper",
    "picture": "https://example.com/grace.png",
}


def providers_with_google_keys():
    providers = copy.deepcopy(settings.SOCIALACCOUNT_PROVIDERS)
    providers["google"]["APPS"] = [{"client_id": CLIENT_ID, "secret": CLIENT_SECRET, "key": ""}]
    return providers


def providers_without_google_keys():
    providers = copy.deepcopy(settings.SOCIALACCOUNT_PROVIDERS)
    providers["google"]["APPS"] = []
    return providers


@pytest.fixture
def google_keys():
    with override_settings(SOCIALACCOUNT_PROVIDERS=providers_with_google_keys()):
        yield


@pytest.fixture
def no_google_keys():
    with override_settings(SOCIALACCOUNT_PROVIDERS=providers_without_google_keys()):
        yield


@pytest.fixture
def google():
    """Google's token and userinfo endpoints; anything else reaching the network is an error."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def answer_google(mock, *, code, user_info, access_token="ya29.test-access-token"):
    # No id_token in the answer: allauth then fetches the userinfo endpoint with the access token.
    mock.post(
        TOKEN_URL,
        json={
            "access_token": access_token,
            "expires_in": 3599,
            "scope": "openid email profile",
            "token_type": "Bearer",
        },
    )
    mock.get(
        USERINFO_URL,
        json=user_info,
        match=[matchers.header_matcher({"Authorization": f"Bearer {access_token}"})],
    )


def sign_in_with_google(client, mock, *, code="auth-code-1", user_info=GOOGLE_USER):
    """Press the Google button, come back from Google with `code`, and return the callback response."""
    start = client.post("/accounts/google/login/")
    assert start.status_code == HTTPStatus.FOUND
    authorize = urlsplit(start["Location"])
    assert (authorize.scheme, authorize.netloc) == ("https", "accounts.google.com")
    params = parse_qs(authorize.query)
    assert params["client_id"] == [CLIENT_ID]
    assert params["redirect_uri"] == ["http://testserver/accounts/google/login/callback/"]
    state = params["state"][0]

    answer_google(mock, code=code, user_info=user_info)
    return client.get("/accounts/google/login/callback/", {"code": code, "state": state})


def signed_in_user_id(client):
    return client.session.get(SESSION_KEY)


def token_request_params(mock):
    token_calls = [call for call in mock.calls if call.request.url == TOKEN_URL]
    assert len(token_calls) == 1
    return {key: values[0] for key, values in parse_qs(token_calls[0].request.body).items()}


def test_first_google_login_creates_user_and_profile_and_signs_in(client, google_keys, google):
    response = sign_in_with_google(client, google)

    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == settings.LOGIN_REDIRECT_URL
    user = User.objects.get()
    assert user.email == "grace@example.com"
    assert (user.first_name, user.last_name) == ("Grace", "Hopper")
    assert not user.has_usable_password()
    assert Profile.objects.filter(user=user).exists()
    assert get_balance(user) == 0
    assert SocialAccount.objects.get().uid == GOOGLE_USER["id"]
    assert signed_in_user_id(client) == str(user.pk)

    # The code was exchanged with our client credentials, and Google was asked who signed in.
    sent = token_request_params(google)
    assert sent["code"] == "auth-code-1"
    assert sent["client_id"] == CLIENT_ID
    assert sent["grant_type"] == "authorization_code"
    assert any(call.request.url == USERINFO_URL for call in google.calls)

    home = client.get("/")
    assert b"grace@example.com" in home.content
    assert b"Credits: <strong" in home.content


def test_second_google_login_reuses_the_same_user(client, google_keys, google):
    sign_in_with_google(client, google, code="first-code")
    first_user = User.objects.get()
    client.post("/accounts/logout/")
    assert signed_in_user_id(client) is None
    google.reset()

    response = sign_in_with_google(client, google, code="second-code")

    assert response.status_code == HTTPStatus.FOUND
    assert User.objects.count() == 1
    assert Profile.objects.count() == 1
    assert SocialAccount.objects.count() == 1
    assert signed_in_user_id(client) == str(first_user.pk)


def test_google_login_joins_an_existing_email_account(client, google_keys, google, make_user):
    """Someone who signed up with email and later uses Google (same, verified address) stays one user."""
    existing = make_user("grace@example.com")

    response = sign_in_with_google(client, google)

    assert response.status_code == HTTPStatus.FOUND
    assert User.objects.count() == 1
    assert signed_in_user_id(client) == str(existing.pk)
    assert SocialAccount.objects.get().user == existing


def test_google_login_joins_an_account_created_with_mixed_case_email(client, google_keys, google, make_user):
    existing = make_user("Grace@Example.com")

    response = sign_in_with_google(client, google)

    assert response.status_code == HTTPStatus.FOUND
    assert User.objects.count() == 1
    assert signed_in_user_id(client) == str(existing.pk)


def test_google_callback_with_wrong_state_signs_nobody_in(client, google_keys, google):
    client.post("/accounts/google/login/")
    response = client.get("/accounts/google/login/callback/", {"code": "c", "state": "forged"})

    assert response.status_code == HTTPStatus.UNAUTHORIZED  # allauth's "login failure" page
    assert signed_in_user_id(client) is None
    assert not User.objects.exists()
    assert not google.calls  # no token exchange for a forged state


def test_google_token_exchange_failure_signs_nobody_in(client, google_keys, google):
    start = client.post("/accounts/google/login/")
    state = parse_qs(urlsplit(start["Location"]).query)["state"][0]
    google.post(TOKEN_URL, status=400, json={"error": "invalid_grant"})

    response = client.get("/accounts/google/login/callback/", {"code": "expired", "state": state})

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert signed_in_user_id(client) is None
    assert not User.objects.exists()


def test_home_shows_google_button_when_keys_are_set(client, google_keys):
    response = client.get("/")
    assert b"Sign in with Google" in response.content


def test_without_google_keys_there_is_no_button_and_no_error(client, no_google_keys):
    home = client.get("/")
    assert home.status_code == HTTPStatus.OK
    assert b"Sign in with Google" not in home.content
    assert b"/accounts/google/login/" not in home.content

    login_page = client.get("/accounts/login/")
    assert login_page.status_code == HTTPStatus.OK
    assert b"/accounts/google/login/" not in login_page.content

    # Google's URLs are not there without its keys: a plain 404, never a server error.
    assert client.get("/accounts/google/login/").status_code == HTTPStatus.NOT_FOUND
    assert client.post("/accounts/google/login/").status_code == HTTPStatus.NOT_FOUND
    callback = client.get("/accounts/google/login/callback/", {"code": "c", "state": "s"})
    assert callback.status_code == HTTPStatus.NOT_FOUND
    assert not User.objects.exists()
