"""No secret (Django's SECRET_KEY, the Stripe secret key, the webhook signing secret) ever appears
in a rendered page, a JSON answer, a response header or a log line, whatever the endpoint does:
success, decline, 3-D Secure, bad input, Stripe unreachable, webhooks good and bad, the admin,
the commands. Every log record at every level (the stripe SDK's debug lines included) is read.
The publishable key is public by design and is expected on the billing page."""

import contextlib
import json
import logging
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from billing import ledger, stripe_gateway
from billing.models import Payment
from scripts import localstripe_server
from tests.stripe_helpers import THREE_D_SECURE, card, complete_3ds, intent_id_from_secret, post_json, signed_headers

DJANGO_SECRET = "django-secret-Qx7canaryDJ4ngo-not-for-pages-0123456789abcdef"
STRIPE_SECRET = "sk_test_Qx7canarySTRIPEsecretKey0123456789"
WEBHOOK_SECRET = "whsec_Qx7canaryWEBHOOKsigning0123456789"
PUBLISHABLE = "pk_test_Qx7publicOnPurpose"
SECRETS = {"SECRET_KEY": DJANGO_SECRET, "STRIPE_SECRET_KEY": STRIPE_SECRET, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}


def fragments(secret: str) -> list[str]:
    """The whole secret and its distinctive part (a masked or truncated echo would still show it)."""
    core = secret.split("_", 2)[-1] if secret.startswith(("sk_", "whsec_")) else secret
    return [secret, core[:16], core[-16:]]


class Exposure:
    """Everything the site said: bodies and headers of every answer, every log record."""

    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def response(self, label: str, response) -> None:
        body = b"".join(response.streaming_content) if response.streaming else response.content
        headers = "\n".join(f"{k}: {v}" for k, v in response.items())
        cookies = response.cookies.output()
        self.seen.append((label, body.decode("utf-8", "replace") + "\n" + headers + "\n" + cookies))

    def text(self, label: str, text: str) -> None:
        self.seen.append((label, text))

    def leaks(self) -> list[str]:
        found = []
        for label, text in self.seen:
            for name, secret in SECRETS.items():
                if any(fragment in text for fragment in fragments(secret)):
                    found.append(f"{name} in {label}")
        return found


@pytest.fixture
def canaries(settings, localstripe):
    settings.SECRET_KEY = DJANGO_SECRET
    settings.STRIPE_SECRET_KEY = STRIPE_SECRET
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_PUBLISHABLE_KEY = PUBLISHABLE
    return localstripe


def signed_event(event_type: str, obj: dict, *, secret: str = WEBHOOK_SECRET, timestamp=None):
    payload = json.dumps(
        {
            "id": f"evt_{time.monotonic_ns()}",
            "object": "event",
            "api_version": stripe_gateway.STRIPE_API_VERSION,
            "type": event_type,
            "data": {"object": obj},
        }
    ).encode()
    return payload, signed_headers(payload, secret, timestamp=timestamp)


def test_no_secret_in_pages_json_headers_or_logs(canaries, settings, caplog, client, make_user):
    caplog.set_level(logging.DEBUG)
    seen = Exposure()
    user = make_user("secrets@example.com")
    admin = make_user("admin@example.com", is_staff=True, is_superuser=True)

    def get(c, path, label=None):
        seen.response(label or f"GET {path}", c.get(path))

    def post(c, path, data, label=None):
        seen.response(label or f"POST {path}", post_json(c, path, data))

    # Anonymous.
    for path in ["/", "/accounts/login/", "/accounts/signup/", "/billing/", "/api/current_user", "/no-such-page/"]:
        get(client, path)
    post(client, "/billing/charge/", {"pack": "starter", "payment_method": "pm_card_visa"}, "anonymous charge")

    # Signed in: pages, the paid action refused, every charge outcome.
    client.force_login(user)
    for path in ["/", "/billing/", "/fortune/", "/api/current_user"]:
        get(client, path)
    seen.response("POST /fortune/ (no credits)", client.post("/fortune/"))
    post(client, "/billing/charge/", {"pack": "starter", "payment_method": card("4242424242424242")}, "charge ok")
    post(client, "/api/stripe", {"id": "pm_card_visa"}, "api/stripe ok")
    post(client, "/billing/charge/", {"pack": "starter", "payment_method": "pm_card_chargeCustomerFail"}, "decline")
    post(client, "/billing/charge/", {"pack": "starter", "payment_method": "pm_doesnotexist"}, "unknown pm")
    post(client, "/billing/charge/", {"pack": "nope", "payment_method": "pm_card_visa"}, "unknown pack")
    seen.response("not JSON", client.post("/billing/charge/", data=b"{", content_type="application/json"))
    three_ds = post_json(client, "/billing/charge/", {"pack": "starter", "payment_method": card(THREE_D_SECURE)})
    seen.response("3-D Secure", three_ds)
    secret = three_ds.json()["client_secret"]
    complete_3ds(canaries, intent_id_from_secret(secret), secret)
    post(client, f"/billing/charge/{three_ds.json()['payment']}/confirm/", {}, "confirm")
    post(client, "/billing/charge/999999/confirm/", {}, "confirm unknown")
    get(client, "/fortune/")
    seen.response("POST /fortune/ (spend)", client.post("/fortune/"))
    get(client, "/billing/", "GET /billing/ after buying")
    assert ledger.get_balance(user) == 5 + 5 + 5 - 1

    # Stripe unreachable.
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{localstripe_server.free_port()}"
    post(client, "/billing/charge/", {"pack": "starter", "payment_method": "pm_card_visa"}, "Stripe unreachable")
    settings.STRIPE_API_BASE = canaries

    # Webhooks: good, wrong secret, tampered, stale, not ours, malformed.
    payment = Payment.objects.filter(user=user, status="succeeded").first()
    intent = {
        "id": payment.stripe_payment_intent_id,
        "object": "payment_intent",
        "amount": 500,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"payment_id": str(payment.pk)},
    }
    hook = Client()
    for label, (payload, headers) in {
        "webhook ok": signed_event("payment_intent.succeeded", intent),
        "webhook wrong secret": signed_event("payment_intent.succeeded", intent, secret="whsec_wrong"),
        "webhook stale": signed_event("payment_intent.succeeded", intent, timestamp=int(time.time()) - 3600),
        "webhook unknown payment": signed_event(
            "payment_intent.succeeded", {**intent, "id": "pi_unknown", "metadata": {"payment_id": "99999"}}
        ),
        "webhook other type": signed_event("customer.created", {"id": "cus_1"}),
    }.items():
        seen.response(label, hook.post("/billing/webhook/", payload, content_type="application/json", **headers))
    payload, headers = signed_event("payment_intent.succeeded", intent)
    tampered = payload.replace(b'"amount": 500', b'"amount": 1')
    seen.response(
        "webhook tampered", hook.post("/billing/webhook/", tampered, content_type="application/json", **headers)
    )

    # The admin, every billing page of it.
    staff = Client()
    staff.force_login(admin)
    profile = user.profile
    for path in [
        "/admin/",
        "/admin/billing/profile/",
        f"/admin/billing/profile/{profile.pk}/change/",
        f"/admin/billing/profile/{profile.pk}/adjust/",
        "/admin/billing/ledgerentry/",
        "/admin/billing/payment/",
        f"/admin/billing/payment/{payment.pk}/change/",
        "/admin/billing/creditpack/",
        "/admin/billing/stripeevent/",
    ]:
        get(staff, path)

    # The commands' output.
    for args in [("show_credits", user.email), ("audit_credits",), ("reconcile_payments", "--dry-run")]:
        out, err = StringIO(), StringIO()
        # audit_credits exits non-zero only when broken; the output is what matters here.
        with contextlib.suppress(SystemExit):
            call_command(*args, stdout=out, stderr=err)
        seen.text(f"manage.py {' '.join(args)}", out.getvalue() + err.getvalue())

    for record in caplog.records:
        formatted = record.getMessage()
        if record.exc_info:
            formatted += "\n" + logging.Formatter().formatException(record.exc_info)
        seen.text(f"log {record.name} {record.levelname}", formatted)

    loggers = {record.name for record in caplog.records}
    assert {"stripe", "billing.webhooks", "billing.stripe_gateway"} <= loggers, loggers
    assert seen.leaks() == []
    billing_page = next(text for label, text in seen.seen if label == "GET /billing/ after buying")
    assert PUBLISHABLE in billing_page  # the one Stripe value a page may show


def test_the_check_itself_finds_a_leak():
    """The detector is not blind: a page or log line carrying a secret, whole or in part, is found."""
    seen = Exposure()
    seen.text("page", f"<p>{STRIPE_SECRET}</p>")
    seen.text("log", f"key ...{WEBHOOK_SECRET[-16:]}")
    seen.text("masked", f"sk_test_****{STRIPE_SECRET[-16:]}")
    seen.text("fine", PUBLISHABLE)
    assert seen.leaks() == ["STRIPE_SECRET_KEY in page", "STRIPE_WEBHOOK_SECRET in log", "STRIPE_SECRET_KEY in masked"]
