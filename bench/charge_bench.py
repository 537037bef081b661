"""The charge endpoint end to end against localstripe, and the Stripe round trip alone.

- charge: POST /billing/charge/ {"pack": "starter", "payment_method": "pm_card_visa"} through
  gunicorn, signed in (a session cookie) with Django's CSRF cookie and header, as the page does.
  The view records a Payment, creates and confirms a PaymentIntent at localstripe, credits the
  ledger, and answers 200 {"status": "succeeded", ...}.
- stripe: the same PaymentIntent call made directly through billing.stripe_gateway (same SDK,
  same parameters, same HTTP client settings) from the bench process: the round trip alone.

The two alternate request by request, one at a time, so localstripe's state and the machine's
load weigh on both alike. Our overhead is p50(charge) - p50(stripe) in each run. The charge
rate limit stays on as in production: the requests are spread over enough users to stay under it.
"""

from __future__ import annotations

import http.client
import json
import secrets
import string
import time
import urllib.request
from dataclasses import dataclass
from importlib import import_module
from urllib.parse import urlsplit

from bench.stats import Figure, percentile


@dataclass
class Plan:
    runs: int
    charges: int  # per run


FULL = Plan(runs=5, charges=200)
SMOKE = Plan(runs=2, charges=10)
CHARGES_PER_USER = 5  # under the production limit of 10 a minute


def _csrf_token() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


def _sessions(count: int) -> list[str]:
    """Session cookies for `count` fresh bench users, made as django.contrib.auth.login makes them."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    from accounts.models import User
    from bench.fill import fill

    prefix = f"charge{int(time.time() * 1000)}x"
    fill(users=count, entries_per_user=0, prefix=prefix)
    store = import_module(settings.SESSION_ENGINE).SessionStore
    keys = []
    for user in User.objects.filter(email__startswith=prefix).order_by("pk"):
        session = store()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        keys.append(session.session_key)
    return keys


def run(plan: Plan, base_url: str, stripe_base: str, log) -> dict:
    from django.conf import settings
    from django.test import override_settings

    from billing import stripe_gateway

    url = urlsplit(base_url)
    total = plan.charges * plan.runs
    sessions = _sessions(-(-total // CHARGES_PER_USER))
    csrf = _csrf_token()
    body = json.dumps({"pack": "starter", "payment_method": "pm_card_visa"}).encode()
    p50 = {k: Figure(f"{k} p50", "ms") for k in ("charge", "stripe")}
    p99 = {k: Figure(f"{k} p99", "ms") for k in ("charge", "stripe")}
    overhead = Figure("charge overhead p50", "ms")
    overhead_p90 = Figure("charge overhead p90", "ms")
    ratio = Figure("charge/stripe p50", "x")
    sent = 0
    with override_settings(STRIPE_API_BASE=stripe_base, STRIPE_MAX_NETWORK_RETRIES=0):
        stripe_gateway.create_payment_intent(  # warm the SDK's connection pool
            amount=500, currency="usd", payment_method="pm_card_visa", metadata={}, idempotency_key="bench-warm"
        )
        for run_index in range(plan.runs):
            # localstripe slows down as it accumulates objects (its lookups scan them): each run
            # starts it empty, so every run measures the same round trip.
            _reset_localstripe(stripe_base)
            times = {"charge": [], "stripe": []}
            for i in range(plan.charges):
                session = sessions[sent // CHARGES_PER_USER]
                sent += 1
                for kind in ("stripe", "charge") if i % 2 == 0 else ("charge", "stripe"):
                    began = time.perf_counter()
                    if kind == "charge":
                        status, answer = _post_charge(url, body, session, csrf, settings)
                        if status != 200 or answer.get("status") != "succeeded":
                            raise RuntimeError(f"charge answered {status}: {answer}")
                    else:
                        intent = stripe_gateway.create_payment_intent(
                            amount=500,
                            currency="usd",
                            payment_method="pm_card_visa",
                            metadata={"payment_id": 0, "user_id": 0, "pack": "starter"},
                            idempotency_key=f"bench:{run_index}:{i}",
                        )
                        if intent.status != "succeeded":
                            raise RuntimeError(f"localstripe answered {intent.status}")
                    times[kind].append(time.perf_counter() - began)
            for kind, values in times.items():
                p50[kind].add(percentile(values, 50) * 1000)
                p99[kind].add(percentile(values, 99) * 1000)
            overhead.add(p50["charge"].runs[-1] - p50["stripe"].runs[-1])
            overhead_p90.add((percentile(times["charge"], 90) - percentile(times["stripe"], 90)) * 1000)
            ratio.add(p50["charge"].runs[-1] / p50["stripe"].runs[-1])
            log(
                f"charge run {run_index + 1}/{plan.runs}: charge p50 {p50['charge'].runs[-1]:.1f} ms, "
                f"stripe p50 {p50['stripe'].runs[-1]:.1f} ms, overhead {overhead.runs[-1]:.1f} ms"
            )
    return {"p50": p50, "p99": p99, "overhead": overhead, "overhead_p90": overhead_p90, "ratio": ratio}


def _reset_localstripe(base: str) -> None:
    # The loopback localstripe this bench started.
    request = urllib.request.Request(f"{base}/_config/data", method="DELETE")  # noqa: S310
    urllib.request.urlopen(request, timeout=10).close()  # noqa: S310


def _post_charge(url, body: bytes, session: str, csrf: str, settings) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/billing/charge/",
            body=body,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-CSRFToken": csrf,
                "Cookie": f"{settings.SESSION_COOKIE_NAME}={session}; {settings.CSRF_COOKIE_NAME}={csrf}",
            },
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null") or {}
    finally:
        conn.close()
