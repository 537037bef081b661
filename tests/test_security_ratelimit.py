"""The per-user rate limit on the charge endpoints (billing.ratelimit): 429 JSON with a clear
message and Retry-After, one budget per user whatever process or server answers, counted in the
database with one atomic statement."""

import json
import os
import subprocess
import sys
from http import HTTPStatus
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from billing import ratelimit
from billing.models import Payment, RateLimitCounter
from tests.conftest import run_in_processes

ROOT = Path(__file__).resolve().parent.parent
CHARGE = "/billing/charge/"
API_STRIPE = "/api/stripe"
# Windows are fixed and aligned to the clock: a day-long one makes a test crossing a window's
# end (and so starting afresh halfway) practically impossible.
DAY = 86_400
# Refused before Stripe (a malformed payment method): the view answers 400 and creates nothing.
BAD_CHARGE = {"pack": "starter", "payment_method": "not-a-payment-method"}


def post_json(client, url, data):
    return client.post(url, data=json.dumps(data), content_type="application/json")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("10/60", (10, 60)), (" 3/1 ", (3, 1)), ("off", None), ("OFF", None), ("", None), ("0", None), (None, None)],
)
def test_parse_rate(value, expected):
    assert ratelimit.parse_rate(value) == expected


@pytest.mark.parametrize("value", ["10", "10/0", "0/60", "-1/60", "a/b", "10/60/1", "1.5/60"])
def test_a_malformed_rate_is_a_configuration_error_naming_the_setting(value):
    with pytest.raises(ImproperlyConfigured, match="BILLING_CHARGE_RATE_LIMIT"):
        ratelimit.parse_rate(value, name="BILLING_CHARGE_RATE_LIMIT")


def test_a_malformed_rate_stops_start_up():
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "DOTENV_PATH") if k in os.environ}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={
            **env,
            "DEBUG": "1",
            "DATABASE_URL": "sqlite:////tmp/credits-ratelimit-check.sqlite3",
            "BILLING_CHARGE_RATE_LIMIT": "ten a minute",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "BILLING_CHARGE_RATE_LIMIT must be" in result.stderr


def test_the_limit_answers_429_with_a_clear_message_and_retry_after(settings, signed_in_client):
    settings.BILLING_CHARGE_RATE_LIMIT = f"3/{DAY}"
    for _ in range(3):
        assert post_json(signed_in_client, CHARGE, BAD_CHARGE).status_code == HTTPStatus.BAD_REQUEST
    refused = post_json(signed_in_client, CHARGE, BAD_CHARGE)
    assert refused.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert refused["Content-Type"] == "application/json"
    body = refused.json()
    assert "Too many payment attempts" in body["error"]
    retry_after = int(refused["Retry-After"])
    assert 1 <= retry_after <= DAY
    assert body["retry_after"] == retry_after
    assert "Please wait " in body["error"]
    assert not Payment.objects.exists()


def test_the_view_is_not_called_over_the_limit(settings, signed_in_client, user):
    """A request that would have been answered 200/402/503 gets 429 and creates no payment."""
    settings.BILLING_CHARGE_RATE_LIMIT = f"1/{DAY}"
    assert post_json(signed_in_client, CHARGE, BAD_CHARGE).status_code == HTTPStatus.BAD_REQUEST
    good = {"pack": "starter", "payment_method": "pm_card_visa"}
    assert post_json(signed_in_client, CHARGE, good).status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert not Payment.objects.filter(user=user).exists()


def test_charge_and_api_stripe_share_one_budget(settings, signed_in_client):
    settings.BILLING_CHARGE_RATE_LIMIT = f"2/{DAY}"
    assert post_json(signed_in_client, CHARGE, BAD_CHARGE).status_code == HTTPStatus.BAD_REQUEST
    assert post_json(signed_in_client, API_STRIPE, {"id": "bad"}).status_code == HTTPStatus.BAD_REQUEST
    assert post_json(signed_in_client, API_STRIPE, {"id": "bad"}).status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert post_json(signed_in_client, CHARGE, BAD_CHARGE).status_code == HTTPStatus.TOO_MANY_REQUESTS


def test_the_confirm_endpoint_is_limited_too(settings, signed_in_client):
    settings.BILLING_CHARGE_RATE_LIMIT = f"2/{DAY}"
    url = reverse("billing:charge_confirm", args=[999999])
    assert signed_in_client.post(url).status_code == HTTPStatus.NOT_FOUND
    assert signed_in_client.post(url).status_code == HTTPStatus.NOT_FOUND
    refused = signed_in_client.post(url)
    assert refused.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert refused.has_header("Retry-After")


def test_each_user_has_their_own_budget(settings, client, user, other_user):
    settings.BILLING_CHARGE_RATE_LIMIT = f"1/{DAY}"
    client.force_login(user)
    assert post_json(client, CHARGE, BAD_CHARGE).status_code == HTTPStatus.BAD_REQUEST
    assert post_json(client, CHARGE, BAD_CHARGE).status_code == HTTPStatus.TOO_MANY_REQUESTS
    client.force_login(other_user)
    assert post_json(client, CHARGE, BAD_CHARGE).status_code == HTTPStatus.BAD_REQUEST


def test_anonymous_and_non_post_requests_are_not_counted(settings, client, user):
    settings.BILLING_CHARGE_RATE_LIMIT = f"1/{DAY}"
    for _ in range(3):
        assert post_json(client, CHARGE, BAD_CHARGE).status_code == HTTPStatus.UNAUTHORIZED
    client.force_login(user)
    for _ in range(3):
        assert client.get(CHARGE).status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert not RateLimitCounter.objects.exists()
    assert post_json(client, CHARGE, BAD_CHARGE).status_code == HTTPStatus.BAD_REQUEST


def test_off_disables_the_limit(settings, signed_in_client):
    settings.BILLING_CHARGE_RATE_LIMIT = "off"
    for _ in range(5):
        assert post_json(signed_in_client, CHARGE, BAD_CHARGE).status_code == HTTPStatus.BAD_REQUEST
    assert not RateLimitCounter.objects.exists()


def test_a_new_window_starts_a_new_count_and_ended_windows_are_cleared(db):
    t0 = 1_000_040.0  # 20 s into the 60 s window that starts at 1,000,020
    start = 1_000_020
    assert ratelimit.hit("b", limit=2, period=60, now=t0) == (True, start + 60 - int(t0))
    assert ratelimit.hit("b", limit=2, period=60, now=t0 + 1)[0] is True
    allowed, retry_after = ratelimit.hit("b", limit=2, period=60, now=t0 + 2)
    assert (allowed, retry_after) == (False, start + 60 - int(t0) - 2)
    ratelimit.hit("other", limit=2, period=60, now=t0)
    # The next window: counted from one again; the periodic clean-up forgets the ended window.
    assert ratelimit.hit("b", limit=2, period=60, now=start + 60) == (True, 60)
    assert RateLimitCounter.objects.filter(window_start=start).count() == 2
    assert ratelimit.clear_ended_windows(now=start + 61) == 2
    assert list(RateLimitCounter.objects.values_list("bucket", "window_start", "hits")) == [("b", start + 60, 1)]
    assert ratelimit.clear_ended_windows(now=start + 61) == 0


def _hammer(bucket, times):
    from django.db import connection

    allowed = 0
    for _ in range(times):
        ok, _ = ratelimit.hit(bucket, limit=100, period=3600, now=1_800_000_000.0)  # one window for all
        allowed += ok
    connection.close()
    return allowed


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_budget_across_processes():
    """8 processes (as 8 gunicorn workers on two servers would) share one user's budget exactly."""
    allowed = run_in_processes(_hammer, [("charge:user:1", 25)] * 8)
    assert sum(allowed) == 100
    assert RateLimitCounter.objects.get(bucket="charge:user:1").hits == 200


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (1, "1 second"),
        (59, "59 seconds"),
        (119, "119 seconds"),
        (120, "about 2 minutes"),
        (1188, "about 20 minutes"),
        (7200, "about 2 hours"),
        (86_399, "about 24 hours"),
    ],
)
def test_the_wait_is_said_in_words(seconds, words):
    assert ratelimit._in_words(seconds) == words
