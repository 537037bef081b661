"""The whole loop in a real browser: sign up, Add credits with a card, spend one, a decline.

Headless Debian Chromium (Playwright) against pytest-django's live server, with Stripe played by
a live localstripe: the page loads localstripe's fake Stripe.js and the dev-only adapter, the
server charges through the official SDK. Nothing of our own is mocked.
"""

import os

import pytest

from billing.ledger import get_balance
from billing.models import Payment
from tests.seed import starter_pack

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PASSWORD = "a long enough test passphrase"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def chromium():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (CI installs it)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop on this thread; the test's own ORM calls are
    # ordinary synchronous code all the same.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(chromium, live_server, localstripe, transactional_db):
    # Earlier transactional tests may have flushed the migration's pack away.
    starter_pack()
    context = chromium.new_context(base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems = []
    # Script errors and CSP violations; an expected 402 shows up as a failed load, not a problem.
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.problems = problems
    yield page
    context.close()


def sign_up(page, email):
    from playwright.sync_api import expect

    page.goto("/accounts/signup/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.get_by_role("button", name="Sign up", exact=True).click()
    expect(page.get_by_test_id("header-credits")).to_have_text("Credits: 0")


def fill_card(page, number, *, month="12", year="34", cvc="123"):
    card = page.get_by_test_id("card-element")
    card.locator("[data-field=number]").fill(number)
    card.locator("[data-field=exp_month]").fill(month)
    card.locator("[data-field=exp_year]").fill(year)
    card.locator("[data-field=cvc]").fill(cvc)


def test_sign_up_buy_spend_and_a_declined_card(page):
    from playwright.sync_api import expect

    sign_up(page, "buyer@example.com")
    header = page.get_by_test_id("header-credits")
    dialog = page.locator("#add-credits-dialog")

    # One click from any page: the header's Add credits lands on /billing/ with the dialog open.
    page.get_by_test_id("header-add-credits").click()
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("pay-submit")).to_have_text("Pay $5.00")
    fill_card(page, "4242 4242 4242 4242")
    # A double click pays once: the button is disabled as soon as the first click submits.
    page.get_by_test_id("pay-submit").dblclick()
    expect(header).to_have_text("Credits: 5")
    expect(dialog).to_be_hidden()
    expect(page.get_by_test_id("pay-success")).to_contain_text("5 credits added")
    expect(page.locator("#balance-value")).to_have_text("5")
    expect(page.locator("#payments")).to_contain_text("Succeeded")
    payments = Payment.objects.filter(user__email="buyer@example.com")
    assert [p.status for p in payments] == ["succeeded"]

    page.goto("/fortune/")
    page.get_by_test_id("spend").click()
    expect(header).to_have_text("Credits: 4")

    # A declined card: a sentence for the customer inline, the dialog still open, the balance untouched.
    page.goto("/billing/")
    page.locator("[data-buy-pack=starter]").click()
    expect(dialog).to_be_visible()
    fill_card(page, "4000000000000341")
    page.get_by_test_id("pay-submit").click()
    expect(page.get_by_test_id("pay-error")).to_contain_text("declined")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("pay-submit")).to_be_enabled()
    expect(header).to_have_text("Credits: 4")
    expect(page.locator("#balance-value")).to_have_text("4")
    assert get_balance(payments[0].user) == 4
    assert sorted(p.status for p in payments.all()) == ["failed", "succeeded"]
    assert not page.problems, page.problems  # no script errors, no CSP violations


def test_three_d_secure_card_is_credited_after_authentication(page):
    from playwright.sync_api import expect

    sign_up(page, "secure@example.com")
    page.goto("/billing/")
    page.locator("[data-buy-pack=starter]").click()
    fill_card(page, "4000002500003155")
    page.get_by_test_id("pay-submit").click()
    # The dialog steps aside so the bank's window (here localstripe's) can be clicked.
    page.get_by_role("button", name="Complete authentication").click()
    expect(page.get_by_test_id("header-credits")).to_have_text("Credits: 5")
    expect(page.locator("#add-credits-dialog")).to_be_hidden()
    assert Payment.objects.get(user__email="secure@example.com").status == "succeeded"
    assert not page.problems, page.problems


def test_three_d_secure_refused_reads_in_plain_words(page):
    from playwright.sync_api import expect

    sign_up(page, "refused@example.com")
    page.goto("/billing/")
    page.locator("[data-buy-pack=starter]").click()
    fill_card(page, "4000002500003155")
    page.get_by_test_id("pay-submit").click()
    page.get_by_role("button", name="Fail authentication").click()
    # The server's sentence (billing/decline_messages.py), never Stripe.js's own words.
    expect(page.get_by_test_id("pay-error")).to_contain_text("Your bank could not confirm the payment")
    expect(page.get_by_test_id("pay-error")).not_to_contain_text("PaymentMethod")
    expect(page.get_by_test_id("header-credits")).to_have_text("Credits: 0")
    assert Payment.objects.get(user__email="refused@example.com").status == "failed"
    assert not page.problems, page.problems


def test_billing_page_with_grants_fits_a_phone_and_a_desktop(page, live_server):
    """Balance by category, what expires when, pack validity and an expiry entry, at 1280 and
    390 px: nothing wider than the screen. BILLING_SHOTS=<dir> keeps the screenshots to look at."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from billing import ledger
    from billing.models import CreditGrant, CreditPack, Profile

    sign_up(page, "grants@example.com")
    user = get_user_model().objects.get(email="grants@example.com")
    CreditPack.objects.filter(slug="starter").update(validity_days=365)
    now = timezone.now()
    ledger.adjust_credits(user, 12, reason="Paid credits carried over from the old plan", actor=None)
    gone = ledger.grant_credits(user, 2, reason="Trial credits", expires_at=now + timedelta(days=1))
    ledger.grant_credits(user, 3, reason="Welcome bonus", expires_at=now + timedelta(days=30))
    ledger.grant_credits(user, 5, reason="Loyalty", category="paid", expires_at=now + timedelta(days=400))
    past = now - timedelta(seconds=1)  # the clock cannot be moved, so the trial's expiry is
    CreditGrant.objects.filter(entry=gone).update(expires_at=past)
    Profile.objects.filter(user=user).update(next_expiry=past)
    ledger.expire_credits()
    shots = os.environ.get("BILLING_SHOTS")
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto("/billing/")
        assert page.get_by_test_id("balance").inner_text().startswith("20")
        assert "3 promotional credits expire on" in page.get_by_test_id("expiring").inner_text()
        assert "valid for 365 days" in page.content()
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{overflow}px of horizontal scrolling at {width}px"
        if shots:
            page.screenshot(path=os.path.join(shots, f"billing-{width}.png"), full_page=True)
    assert page.problems == []
