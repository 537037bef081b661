"""What the billing page hands the browser for the Add credits dialog (the browser flow itself is
tests/test_browser.py): Stripe.js from STRIPE_JS_URL and nothing of the stand-in's, the charge
endpoints, the publishable key."""

import re
from http import HTTPStatus

import pytest
import requests

from billing.ledger import add_credits
from billing.models import CreditPack, LedgerEntry


def billing_html(client) -> str:
    response = client.get("/billing/")
    assert response.status_code == HTTPStatus.OK
    return response.content.decode()


def dialog_data(html: str) -> dict[str, str]:
    tag = re.search(r'<dialog id="add-credits-dialog"([^>]*)>', html)
    assert tag, "the billing page has the Add credits dialog"
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', tag.group(1)))


def test_production_pages_load_real_stripe_js_and_billing_js_only(signed_in_client, settings):
    settings.STRIPE_API_BASE = None
    settings.STRIPE_JS_URL = "https://js.stripe.com/v3/"
    html = billing_html(signed_in_client)
    assert '<script src="https://js.stripe.com/v3/" defer></script>' in html
    assert re.findall(r'<script src="([^"]+)"', html) == ["https://js.stripe.com/v3/", "/static/billing/billing.js"]
    assert "billing/billing.js" in html


def test_against_localstripe_the_page_loads_only_the_stand_ins_stripe_js(signed_in_client, settings):
    # The stand-in's gaps are filled by its launcher, inside the Stripe.js it serves (scripts/):
    # the billing app loads Stripe.js from wherever STRIPE_JS_URL says, and nothing else.
    settings.STRIPE_API_BASE = "http://127.0.0.1:8420/"
    settings.STRIPE_JS_URL = "http://127.0.0.1:8420/js.stripe.com/v3/"
    html = billing_html(signed_in_client)
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert scripts == ["http://127.0.0.1:8420/js.stripe.com/v3/", "/static/billing/billing.js"]


def test_the_launcher_serves_stripe_js_with_what_localstripe_lacks(localstripe):
    script = requests.get(f"{localstripe}/js.stripe.com/v3/", timeout=10)
    assert script.status_code == HTTPStatus.OK
    assert script.headers["Content-Type"].startswith("application/javascript")
    fake, _, adapter = script.text.partition("DEVELOPMENT AND TESTS ONLY")
    assert "const LOCALSTRIPE_BASE_API" in fake
    assert "stripe.createPaymentMethod = function" in adapter


def test_the_dialog_names_the_charge_endpoints_the_key_and_the_default_pack(signed_in_client, settings):
    CreditPack.objects.create(slug="big", name="Big", credits=50, amount=4000, currency="usd")
    data = dialog_data(billing_html(signed_in_client))
    assert data["charge-url"] == "/billing/charge/"
    assert data["confirm-url"].replace(data["payment-placeholder"], "7") == "/billing/charge/7/confirm/"
    assert data["stripe-key"] == settings.STRIPE_PUBLISHABLE_KEY
    assert data["default-pack"] == settings.BILLING_DEFAULT_PACK == "starter"
    html = billing_html(signed_in_client)
    assert re.search(r'name="pack" value="starter"[^>]*checked', html)
    assert re.search(r'name="pack" value="big" data-price="\$40.00"', html)


def test_the_default_pack_falls_back_to_the_first_on_sale(signed_in_client):
    CreditPack.objects.filter(slug="starter").update(active=False)
    CreditPack.objects.create(slug="big", name="Big", credits=50, amount=4000, currency="usd")
    assert dialog_data(billing_html(signed_in_client))["default-pack"] == "big"


def test_nothing_on_sale_means_no_dialog_and_no_stripe_js(signed_in_client, settings):
    CreditPack.objects.update(active=False)
    html = billing_html(signed_in_client)
    assert "add-credits-dialog" not in html
    assert settings.STRIPE_JS_URL not in html
    assert "No credit packs are on sale right now." in html


@pytest.mark.parametrize("path", ["/", "/fortune/"])
def test_add_credits_is_one_click_from_any_page(signed_in_client, path):
    html = signed_in_client.get(path).content.decode()
    assert re.search(r'href="/billing/#add-credits" data-add-credits', html)


def test_the_short_balance_page_links_to_the_dialog(signed_in_client):
    response = signed_in_client.post("/fortune/")
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert 'href="/billing/#add-credits" data-add-credits' in response.content.decode()


def test_home_page_counts_credits_in_words(signed_in_client, user):
    assert "<strong>0</strong> credits." in signed_in_client.get("/").content.decode()
    add_credits(user, 1, kind=LedgerEntry.Kind.BONUS, reason="test")
    assert "<strong>1</strong> credit." in signed_in_client.get("/").content.decode()


@pytest.mark.parametrize(("query", "status"), [("?key=pk_test_x", HTTPStatus.OK), ("", 401), ("?key=sk_test_x", 401)])
def test_our_localstripe_lets_the_publishable_key_create_payment_methods(localstripe_server, query, status):
    """As real Stripe does for Stripe.js, and as the dev-only adapter relies on; nothing else."""
    card = {"number": "4242424242424242", "exp_month": "12", "exp_year": "2034", "cvc": "123"}
    fields = {"type": "card", **{f"card[{name}]": value for name, value in card.items()}}
    response = requests.post(f"{localstripe_server}/v1/payment_methods{query}", data=fields, timeout=5)
    assert response.status_code == status
    if status == HTTPStatus.OK:
        assert response.json()["id"].startswith("pm_")
