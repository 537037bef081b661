"""Who may see and do what: every page and endpoint of the site, and every billing page of the
admin, for anonymous visitors, the owner, another user (IDOR), staff without permissions, staff
who may only view, and a superuser; and CSRF on every state-changing view, with the same
request succeeding once it carries the token (so a 403 means CSRF, nothing else).

A guard test fails when a route appears that the matrix does not cover, or when a view other
than the webhook (signed instead) is exempt from CSRF."""

import json
import time
from http import HTTPStatus

import pytest
from django.contrib import admin as django_admin
from django.test import Client
from django.urls import URLResolver, get_resolver, reverse

from billing import ledger, stripe_gateway
from billing.models import AutoRecharge, CreditGrant, CreditPack, Hold, LedgerEntry, Payment, SavedCard, StripeEvent
from tests.stripe_helpers import signed_headers

ROLES = ["anonymous", "owner", "other", "staff", "viewer", "superuser"]
OK, FOUND, BAD = HTTPStatus.OK, HTTPStatus.FOUND, HTTPStatus.BAD_REQUEST
UNAUTH, FORBIDDEN, MISSING = HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN, HTTPStatus.NOT_FOUND
OWNER_REASON = "owner-only ledger line"
OTHER_REASON = "other-only ledger line"


# --- the people and their data ----------------------------------------------------------------


@pytest.fixture
def people(make_user, make_staff):
    owner = make_user("owner@example.com")
    other = make_user("other@example.com")
    staff = make_user("staff@example.com", is_staff=True)  # staff, no permission at all
    viewer = make_staff("viewer@example.com", "view_*")  # may look, may not adjust/refund/reprocess
    superuser = make_user("root@example.com", is_staff=True, is_superuser=True)
    return {"owner": owner, "other": other, "staff": staff, "viewer": viewer, "superuser": superuser}


@pytest.fixture
def data(people):
    pack = CreditPack.objects.get(slug="starter")
    found = {}
    for role, reason in (("owner", OWNER_REASON), ("other", OTHER_REASON)):
        user = people[role]
        payment = Payment.objects.create(
            user=user,
            pack=pack,
            credits=5,
            amount=500,
            currency="usd",
            status=Payment.Status.SUCCEEDED,
            stripe_payment_intent_id=f"pi_access_{role}",
        )
        ledger.add_credits(user, 5, kind="purchase", reason=reason, payment=payment)
        found[role] = payment
    event = StripeEvent.objects.create(
        event_id="evt_access_failed", type="payment_intent.succeeded", status="failed", payload={}, error="x"
    )
    # A hold that has ended: its pages exist, the owner's balance is untouched.
    hold = ledger.release_hold(ledger.hold_credits(people["owner"], 1, reason="owner's ended hold"))
    # A saved card and auto-recharge for the admin's pages, on a user outside the roles (the owner's
    # would change what the card and auto-recharge routes answer).
    profile = type(people["owner"]).objects.create_user(email="carded@example.com", password="x" * 20).profile
    card = SavedCard.objects.create(
        profile=profile, stripe_payment_method_id="pm_access", brand="visa", last4="4242", exp_month=1, exp_year=2040
    )
    auto_recharge = AutoRecharge.objects.create(profile=profile, pack=pack, threshold=1, monthly_limit=1)
    return {
        "payment": found["owner"],
        "other_payment": found["other"],
        "event": event,
        "hold": hold,
        "card": card,
        "auto_recharge": auto_recharge,
    }


@pytest.fixture
def clients(people):
    out = {"anonymous": Client()}
    for role, user in people.items():
        out[role] = Client()
        out[role].force_login(user)
    return out


def state():
    """Everything a refused request must leave alone."""
    return (
        list(LedgerEntry.objects.order_by("id").values_list("id", "delta", "balance_after")),
        list(Payment.objects.order_by("id").values_list("id", "status", "amount_refunded", "stripe_payment_intent_id")),
        list(StripeEvent.objects.order_by("id").values_list("id", "status", "attempts")),
        list(CreditPack.objects.order_by("id").values_list("id", "slug", "amount", "active")),
        list(Hold.objects.order_by("id").values_list("id", "status", "captured")),
    )


def post_json(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


# --- the site's own routes --------------------------------------------------------------------

LOGIN = "/accounts/login/"
BAD_CHARGE = {"pack": "starter", "payment_method": "not-a-pm"}  # refused before Stripe
AUTO_RECHARGE_ON = {"enabled": True, "pack": "starter", "threshold": 3, "monthly_limit": 5}  # no saved card: 400


def expect_site(role):
    signed_in = role != "anonymous"
    return {
        # name: (method, path, body, expected status, (redirect prefix or None))
        "home": ("GET", "/", None, OK),
        "favicon": ("GET", "/favicon.ico", None, HTTPStatus.MOVED_PERMANENTLY),
        "fortune": ("GET", "/fortune/", None, OK if signed_in else FOUND),
        "long_fortune": ("GET", "/fortune/long/", None, OK if signed_in else FOUND),
        "index": ("GET", "/billing/", None, OK if signed_in else FOUND),
        # A receipt is its owner's page; for anyone else it does not exist.
        "receipt": ("GET", "{payment_receipt}", None, OK if role == "owner" else MISSING if signed_in else FOUND),
        "charge": ("POST", "/billing/charge/", BAD_CHARGE, BAD if signed_in else UNAUTH),
        # Only the owner may ask about a payment; for anyone else it does not exist.
        "charge_confirm": (
            "POST",
            "{payment_confirm}",
            {},
            OK if role == "owner" else MISSING if signed_in else UNAUTH,
        ),
        # Finish a payment left in 3-D Secure: the owner's has succeeded, so nothing is left to finish.
        "charge_resume": (
            "POST",
            "{payment_resume}",
            {},
            HTTPStatus.CONFLICT if role == "owner" else MISSING if signed_in else UNAUTH,
        ),
        # Saved cards (tests/test_cards.py posts to card_setup, which asks Stripe): a GET is
        # refused by every one; bad input before Stripe; nobody here has a card to remove.
        "card_setup": ("GET", "/billing/cards/setup/", None, HTTPStatus.METHOD_NOT_ALLOWED),
        "card_save": ("POST", "/billing/cards/", {"setup_intent": "not-a-seti"}, BAD if signed_in else UNAUTH),
        "card_remove": ("POST", "/billing/cards/remove/", {}, MISSING if signed_in else UNAUTH),
        # Auto-recharge settings: nobody here has a saved card, so turning it on is refused.
        "auto_recharge": ("POST", "/billing/auto-recharge/", AUTO_RECHARGE_ON, BAD if signed_in else UNAUTH),
        # No session opens the webhook: only a signature does.
        "webhook": ("POST", "/billing/webhook/", {"id": "evt_x", "type": "x", "data": {"object": {}}}, BAD),
        "api_current_user": ("GET", "/api/current_user", None, OK),
        "api_stripe": ("POST", "/api/stripe", {"id": "not-a-pm"}, BAD if signed_in else UNAUTH),
        "api_logout": ("GET", "/api/logout", None, FOUND),
        # The original client's Google sign-in addresses; the test settings have no Google keys.
        "auth_google": ("GET", "/auth/google", None, MISSING),
        "auth_google_callback": ("GET", "/auth/google/callback?code=c&state=s", None, MISSING),
    }


# Pages, not JSON endpoints: their 404 is an HTML page (Google sign-in not set up; no such receipt).
HTML_PAGES = {"auth_google", "auth_google_callback", "receipt"}


def site_routes():
    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            else:
                yield prefix + str(p.pattern), p.name, p.callback

    return list(walk(get_resolver().url_patterns))


def test_the_matrix_covers_every_route_of_the_site(db):
    """A new page or endpoint must be added here, with who may use it."""
    ours = {name for path, name, _ in site_routes() if not path.startswith(("admin/", "accounts/"))}
    assert ours == set(expect_site("owner"))


def test_only_the_webhook_is_exempt_from_csrf(db):
    exempt = {path for path, _, view in site_routes() if getattr(view, "csrf_exempt", False)}
    # allauth's Google One Tap endpoint verifies a Google-signed token instead of a CSRF cookie.
    assert exempt == {"billing/webhook/", "accounts/google/login/token/"}


@pytest.mark.parametrize("role", ROLES)
def test_every_site_route_for_every_role(db, data, clients, people, role):
    client = clients[role]
    before = state()
    for name, (method, path, body, expected) in expect_site(role).items():
        if name == "api_logout":
            continue  # signs the client out: checked on its own below
        path = path.format(
            payment_confirm=f"/billing/charge/{data['payment'].pk}/confirm/",
            payment_receipt=f"/billing/receipts/{data['payment'].reference}/",
            payment_resume=f"/billing/charge/{data['payment'].pk}/resume/",
        )
        response = client.get(path) if method == "GET" else post_json(client, path, body)
        assert response.status_code == expected, (role, name, response.status_code, response.content[:200])
        if expected == FOUND:
            assert response["Location"].startswith(LOGIN), (role, name)
        if response.status_code >= 400 and name not in HTML_PAGES:
            assert response["Content-Type"].startswith("application/json"), (role, name)
    assert state() == before, role  # no route changed anything for anyone (bad input, 404s, GETs)


@pytest.mark.parametrize("role", ROLES)
def test_each_user_sees_only_their_own_money(db, data, clients, people, role):
    client = clients[role]
    user = people.get(role)
    page = client.get("/billing/")
    api = client.get("/api/current_user").json()
    if user is None:
        assert api is None
        assert page.status_code == FOUND
        return
    assert api == {"id": user.pk, "email": user.email, "credits": ledger.get_balance(user)}
    html = page.content.decode()
    assert (OWNER_REASON in html) == (role == "owner")
    assert (OTHER_REASON in html) == (role == "other")
    for payment in (data["payment"], data["other_payment"]):
        assert (f"pi_access_{payment.user.email.split('@')[0]}" in html) is False  # intent ids never shown


def test_a_guessed_payment_id_reveals_nothing(db, data, clients):
    """Another user's payment, a deleted one, one that never existed: the same 404 and body."""
    client = clients["other"]
    answers = {
        post_json(client, f"/billing/charge/{pk}/confirm/", {}).content
        for pk in (data["payment"].pk, 999_999, data["payment"].pk + 1000)
    }
    assert len(answers) == 1


@pytest.mark.parametrize("role", ["owner", "superuser"])
def test_api_logout_signs_out(db, clients, role):
    client = clients[role]
    assert client.get("/api/current_user").json() is not None
    response = client.get("/api/logout")
    assert (response.status_code, response["Location"]) == (FOUND, "/")
    assert client.get("/api/current_user").json() is None


# --- the admin ----------------------------------------------------------------------------------


def billing_admin_pages(data, people):
    """(label, path, what a viewer may do) for every billing model registered in the admin."""
    objects = {
        "profile": people["owner"].profile.pk,
        "ledgerentry": LedgerEntry.objects.filter(profile__user=people["owner"]).first().pk,
        "payment": data["payment"].pk,
        "stripeevent": data["event"].pk,
        "creditpack": CreditPack.objects.get(slug="starter").pk,
        "creditgrant": CreditGrant.objects.filter(profile__user=people["owner"]).first().pk,
        "hold": data["hold"].pk,
        "savedcard": data["card"].pk,
        "autorecharge": data["auto_recharge"].pk,
    }
    pages = [("admin index", "/admin/", OK)]
    for model in django_admin.site._registry:
        if model._meta.app_label != "billing":
            continue
        name = model._meta.model_name
        assert name in objects, f"{name} is in the admin but not in the access matrix"
        pages.append((f"{name} list", reverse(f"admin:billing_{name}_changelist"), OK))
        pages.append((f"{name} page", reverse(f"admin:billing_{name}_change", args=[objects[name]]), OK))
    pages.append(("adjust form", reverse("admin:billing_profile_adjust", args=[objects["profile"]]), FORBIDDEN))
    pages.append(("grant form", reverse("admin:billing_profile_grant", args=[objects["profile"]]), FORBIDDEN))
    return pages


@pytest.mark.parametrize("role", ROLES)
def test_every_billing_admin_page_for_every_role(db, data, clients, people, role):
    client = clients[role]
    before = state()
    for label, path, viewer_gets in billing_admin_pages(data, people):
        response = client.get(path)
        if role in ("anonymous", "owner", "other"):
            assert response.status_code == FOUND, (role, label)
            assert response["Location"].startswith("/admin/login/"), (role, label)
        elif role == "staff":
            expected = OK if label == "admin index" else FORBIDDEN
            assert response.status_code == expected, (role, label, response.status_code)
        elif role == "viewer":
            assert response.status_code == viewer_gets, (role, label, response.status_code)
        else:
            assert response.status_code == OK, (role, label, response.status_code)
    assert state() == before


@pytest.mark.parametrize("role", ["anonymous", "owner", "staff", "viewer"])
def test_only_permitted_staff_change_money_in_the_admin(db, data, clients, people, role, localstripe):
    """Adjust, refund, reprocess and release, each POSTed with a valid CSRF token by someone not allowed."""
    client = clients[role]
    active_hold = ledger.hold_credits(people["owner"], 2, reason="running")
    before = state()
    profile = people["owner"].profile
    client.post(
        reverse("admin:billing_profile_adjust", args=[profile.pk]),
        {
            "delta": "100",
            "reason": "let me in",
            "staff_note": "x",
            "request_id": "0b7a4a3e-0000-4000-8000-000000000001",
        },
    )
    client.post(
        reverse("admin:billing_profile_grant", args=[profile.pk]),
        {
            "amount": "100",
            "category": "paid",
            "reason": "let me in",
            "request_id": "0b7a4a3e-0000-4000-8000-0000000000a3",
        },
    )
    client.post(
        reverse("admin:billing_payment_changelist"),
        {"action": "refund_through_stripe", "_selected_action": [data["payment"].pk], "post": "yes", "amount": "1"},
    )
    client.post(
        reverse("admin:billing_stripeevent_changelist"),
        {"action": "reprocess", "_selected_action": [data["event"].pk]},
    )
    client.post(
        reverse("admin:billing_hold_changelist"), {"action": "release_selected", "_selected_action": [active_hold.pk]}
    )
    client.post(reverse("admin:billing_hold_release", args=[active_hold.pk]))
    client.post(
        reverse("admin:billing_creditpack_add"),
        {"slug": "free", "name": "Free", "credits": 1000, "amount": 50, "currency": "usd", "active": "on"},
    )
    client.post(
        reverse("admin:billing_creditpack_change", args=[CreditPack.objects.get(slug="starter").pk]),
        {"slug": "starter", "name": "Starter", "credits": 5000, "amount": 50, "currency": "usd"},
    )
    assert state() == before, role


def test_the_superuser_may_adjust(db, data, clients, people):
    response = clients["superuser"].post(
        reverse("admin:billing_profile_adjust", args=[people["owner"].profile.pk]),
        {
            "delta": "3",
            "reason": "goodwill",
            "staff_note": "ticket 1",
            "request_id": "0b7a4a3e-0000-4000-8000-000000000002",
        },
    )
    assert response.status_code == FOUND
    assert ledger.get_balance(people["owner"]) == 5 + 3


# --- CSRF on every state-changing view --------------------------------------------------------


def csrf_client(user=None) -> tuple[Client, str]:
    """A client that enforces CSRF like a browser, and the token its cookie carries."""
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    client.get("/accounts/login/" if user is None else "/billing/")  # sets the csrftoken cookie
    return client, client.cookies["csrftoken"].value


def state_changing(data, people):
    """(label, who, method, path, form or JSON body, status with a valid token)."""
    owner_profile = people["owner"].profile.pk
    return [
        ("charge", "owner", "json", "/billing/charge/", BAD_CHARGE, BAD),
        ("confirm", "owner", "json", f"/billing/charge/{data['payment'].pk}/confirm/", {}, OK),
        ("resume", "owner", "json", f"/billing/charge/{data['payment'].pk}/resume/", {}, HTTPStatus.CONFLICT),
        ("api/stripe", "owner", "json", "/api/stripe", {"id": "not-a-pm"}, BAD),
        ("card save", "owner", "json", "/billing/cards/", {"setup_intent": "not-a-seti"}, BAD),
        ("card remove", "owner", "json", "/billing/cards/remove/", {}, MISSING),
        ("auto-recharge", "owner", "json", "/billing/auto-recharge/", AUTO_RECHARGE_ON, BAD),
        ("paid action", "owner", "form", "/fortune/", {}, FOUND),
        ("metered action", "owner", "form", "/fortune/long/", {}, FOUND),
        ("api logout", "owner", "form", "/api/logout", {}, FOUND),
        ("sign out", "owner", "form", "/accounts/logout/", {}, FOUND),
        (
            "sign in",
            None,
            "form",
            "/accounts/login/",
            {"login": "owner@example.com", "password": "correct horse battery staple"},
            FOUND,
        ),
        (
            "sign up",
            None,
            "form",
            "/accounts/signup/",
            {"email": "new@example.com", "password1": "a long pass phrase 42", "password2": "a long pass phrase 42"},
            FOUND,
        ),
        (
            "admin adjust",
            "superuser",
            "form",
            reverse("admin:billing_profile_adjust", args=[owner_profile]),
            {
                "delta": "2",
                "reason": "csrf",
                "staff_note": "csrf",
                "request_id": "0b7a4a3e-0000-4000-8000-000000000003",
            },
            FOUND,
        ),
        (
            "admin grant",
            "superuser",
            "form",
            reverse("admin:billing_profile_grant", args=[owner_profile]),
            {
                "amount": "2",
                "category": "promotional",
                "reason": "csrf",
                "request_id": "0b7a4a3e-0000-4000-8000-0000000000a4",
            },
            FOUND,
        ),
        (
            "admin pack add",
            "superuser",
            "form",
            reverse("admin:billing_creditpack_add"),
            {"slug": "big", "name": "Big", "credits": 50, "amount": 4000, "currency": "usd", "active": "on"},
            FOUND,
        ),
        (
            "admin reprocess",
            "superuser",
            "form",
            reverse("admin:billing_stripeevent_changelist"),
            {"action": "reprocess", "_selected_action": [data["event"].pk]},
            FOUND,
        ),
    ]


def send(client, kind, path, body, token=None):
    headers = {"HTTP_X_CSRFTOKEN": token} if token and kind == "json" else {}
    if kind == "json":
        return client.post(path, data=json.dumps(body), content_type="application/json", **headers)
    form = dict(body, csrfmiddlewaretoken=token) if token else body
    return client.post(path, form)


@pytest.mark.parametrize("index", range(15))
def test_csrf_is_required_on_every_state_changing_view(db, data, people, index):
    label, who, kind, path, body, with_token = state_changing(data, people)[index]
    user = people[who] if who else None
    client, token = csrf_client(user)
    if label == "paid action":
        ledger.add_credits(people["owner"], 1, kind=LedgerEntry.Kind.BONUS, reason="for the paid action")
    if label == "metered action":  # it holds up to 3 credits while it runs
        ledger.add_credits(people["owner"], 3, kind=LedgerEntry.Kind.BONUS, reason="for the metered action")
    before = state()
    users_before = set(people["owner"].__class__.objects.values_list("email", flat=True))

    refused = send(client, kind, path, body)
    assert refused.status_code == FORBIDDEN, (label, refused.status_code)
    assert state() == before, label
    assert set(people["owner"].__class__.objects.values_list("email", flat=True)) == users_before, label
    if user is not None:
        assert client.get("/api/current_user").json() is not None, f"{label}: still signed in after the refusal"

    accepted = send(client, kind, path, body, token)
    assert accepted.status_code == with_token, (label, accepted.status_code, accepted.content[:300])


def test_the_csrf_list_covers_every_state_changing_site_route(db, data, people):
    posted = {path for _, _, _, path, _, _ in state_changing(data, people)}
    for name, (method, path, _, _) in expect_site("owner").items():
        if method == "POST" and name != "webhook":
            path = path.format(
                payment_confirm=f"/billing/charge/{data['payment'].pk}/confirm/",
                payment_resume=f"/billing/charge/{data['payment'].pk}/resume/",
            )
            assert path in posted, name
    # GET pages that also take a POST
    assert {"/fortune/", "/fortune/long/", "/api/logout"} <= posted


# --- webhook replay -----------------------------------------------------------------------------


def test_a_replayed_webhook_delivery_changes_nothing(db, data, client, people, settings):
    """An attacker who captured a genuine delivery can replay it: within the tolerance it is a
    duplicate of a stored event; later its signature is stale. Neither credits anything."""
    payment = data["payment"]
    payment_unpaid = Payment.objects.create(
        user=people["owner"], pack=payment.pack, credits=5, amount=500, currency="usd", status="pending"
    )
    intent = {
        "id": "pi_replay",
        "object": "payment_intent",
        "amount": 500,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"payment_id": str(payment_unpaid.pk)},
    }
    body = json.dumps(
        {
            "id": "evt_replay",
            "api_version": stripe_gateway.STRIPE_API_VERSION,
            "type": "payment_intent.succeeded",
            "data": {"object": intent},
        }
    ).encode()
    captured = signed_headers(body, settings.STRIPE_WEBHOOK_SECRET)
    first = client.post("/billing/webhook/", body, content_type="application/json", **captured)
    assert first.status_code == OK and first.json()["duplicate"] is False
    balance = ledger.get_balance(people["owner"])
    for _ in range(3):
        again = client.post("/billing/webhook/", body, content_type="application/json", **captured)
        assert again.status_code == OK and again.json()["duplicate"] is True
    old = signed_headers(body, settings.STRIPE_WEBHOOK_SECRET, timestamp=int(time.time()) - 301)
    assert client.post("/billing/webhook/", body, content_type="application/json", **old).status_code == BAD
    assert ledger.get_balance(people["owner"]) == balance
    assert LedgerEntry.objects.filter(payment=payment_unpaid).count() == 1


@pytest.mark.parametrize(
    "how",
    ["wrong secret", "tampered body", "stale timestamp", "no header", "garbled header", "signature of another body"],
)
def test_the_webhook_door_refuses_what_stripe_did_not_sign(db, data, client, people, settings, how):
    payment = Payment.objects.create(
        user=people["owner"], pack=data["payment"].pack, credits=5, amount=500, currency="usd", status="pending"
    )
    intent = {
        "id": "pi_door",
        "object": "payment_intent",
        "amount": 500,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"payment_id": str(payment.pk)},
    }
    body = json.dumps(
        {
            "id": f"evt_door_{how}",
            "api_version": stripe_gateway.STRIPE_API_VERSION,
            "type": "payment_intent.succeeded",
            "data": {"object": intent},
        }
    ).encode()
    secret = settings.STRIPE_WEBHOOK_SECRET
    headers = {
        "wrong secret": signed_headers(body, "whsec_not_ours"),
        "tampered body": signed_headers(body, secret),
        "stale timestamp": signed_headers(body, secret, timestamp=int(time.time()) - 301),
        "no header": {},
        "garbled header": {"HTTP_STRIPE_SIGNATURE": "t=abc,v1=zz"},
        "signature of another body": signed_headers(b'{"id": "evt_other"}', secret),
    }[how]
    if how == "tampered body":
        body = body.replace(b'"amount": 500', b'"amount": 5')
    before = state()
    response = client.post("/billing/webhook/", body, content_type="application/json", **headers)
    assert response.status_code == BAD
    assert response.json() == {"error": "Invalid signature."}
    assert state() == before
    assert not StripeEvent.objects.filter(event_id__startswith="evt_door").exists()
