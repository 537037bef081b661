"""Finishing a payment left in 3-D Secure from its row on /billing/, in a real browser against the
live localstripe (whose fake Stripe.js plays the bank's window): start with the 3-D Secure card,
leave the bank's window by reloading, then press Finish payment on the row. BILLING_SHOTS=<dir>
keeps screenshots of the row at 1280 and 390 px."""

import os

import pytest

from billing.ledger import get_balance
from billing.models import LedgerEntry, Payment
from tests.test_browser import chromium, fill_card, page, sign_up  # noqa: F401 - the shared browser fixtures

pytestmark = pytest.mark.browser

THREE_D_SECURE = "4000002500003155"


def leave_in_3ds(page, email) -> Payment:  # noqa: F811
    """Buy with the 3-D Secure card and walk away from the bank's window (reload the page)."""
    from playwright.sync_api import expect

    sign_up(page, email)
    page.goto("/billing/")
    page.locator("[data-buy-pack=starter]").click()
    fill_card(page, THREE_D_SECURE)
    page.get_by_test_id("pay-submit").click()
    expect(page.get_by_role("button", name="Complete authentication")).to_be_visible()
    page.goto("/billing/")
    payment = Payment.objects.get(user__email=email)
    assert payment.status == Payment.Status.REQUIRES_ACTION
    expect(page.get_by_test_id("finish-payment-note")).to_contain_text(
        "Waiting for your bank's confirmation. Finish it or it will be canceled on"
    )
    return payment


def test_finish_payment_from_its_row_credits_once(page):  # noqa: F811
    from playwright.sync_api import expect

    payment = leave_in_3ds(page, "later@example.com")
    shots = os.environ.get("BILLING_SHOTS")
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        expect(page.get_by_test_id("finish-payment")).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{overflow}px of horizontal scrolling at {width}px"
        if shots:
            page.locator("#payments").screenshot(path=os.path.join(shots, f"finish-payment-{width}.png"))

    page.get_by_test_id("finish-payment").click()
    page.get_by_role("button", name="Complete authentication").click()

    expect(page.get_by_test_id("finish-success")).to_contain_text("5 credits added")
    expect(page.get_by_test_id("header-credits")).to_have_text("Credits: 5")
    expect(page.get_by_test_id("finish-payment")).to_have_count(0)
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    assert LedgerEntry.objects.filter(payment=payment).count() == 1
    assert get_balance(payment.user) == 5
    assert not page.problems, page.problems


def test_finish_payment_refused_by_the_bank_reads_in_plain_words(page):  # noqa: F811
    from playwright.sync_api import expect

    payment = leave_in_3ds(page, "refused-later@example.com")
    page.get_by_test_id("finish-payment").click()
    page.get_by_role("button", name="Fail authentication").click()

    # The server's sentence (billing/decline_messages.py), never Stripe.js's own words.
    error = page.get_by_test_id("finish-payment-error")
    expect(error).to_contain_text("Your bank could not confirm the payment")
    expect(error).not_to_contain_text("PaymentMethod")
    expect(page.get_by_test_id("header-credits")).to_have_text("Credits: 0")
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED
    assert not LedgerEntry.objects.filter(payment=payment).exists()
    page.reload()
    expect(page.get_by_test_id("finish-payment")).to_have_count(0)
    assert not page.problems, page.problems
