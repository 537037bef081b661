"""Saving a card and buying with it in a real browser (tests/test_browser.py's Chromium and
localstripe): the page confirms the SetupIntent with Stripe.js confirmCardSetup, then one click
buys a pack with the saved card. BILLING_SHOTS=<dir> keeps screenshots at 1280 and 390 px."""

import os

import pytest

from billing.ledger import get_balance
from billing.models import Payment, SavedCard
from tests.test_browser import chromium, page, sign_up  # noqa: F401 - the shared browser fixtures

pytestmark = pytest.mark.browser


def fill_saved_card_form(tab, number, *, month="12", year="34", cvc="123"):
    card = tab.get_by_test_id("save-card-element")
    card.locator("[data-field=number]").fill(number)
    card.locator("[data-field=exp_month]").fill(month)
    card.locator("[data-field=exp_year]").fill(year)
    card.locator("[data-field=cvc]").fill(cvc)


def test_save_a_card_buy_with_it_in_one_click_and_remove_it(page):  # noqa: F811
    from playwright.sync_api import expect

    sign_up(page, "saver@example.com")
    page.goto("/billing/")
    page.get_by_test_id("save-card").click()
    expect(page.locator("#save-card-dialog")).to_be_visible()
    fill_saved_card_form(page, "4242 4242 4242 4242")
    page.get_by_test_id("save-card-submit").click()
    expect(page.get_by_test_id("saved-card-number")).to_have_text("•••• 4242")
    expect(page.get_by_test_id("saved-card-message")).to_contain_text("Your card is saved")
    assert SavedCard.objects.get(profile__user__email="saver@example.com").last4 == "4242"

    shots = os.environ.get("BILLING_SHOTS")
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto("/billing/")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{overflow}px of horizontal scrolling at {width}px"
        if shots:
            page.screenshot(path=os.path.join(shots, f"saved-card-{width}.png"), full_page=True)

    page.locator("[data-buy-saved=starter]").click()
    expect(page.get_by_test_id("header-credits")).to_have_text("Credits: 5")
    expect(page.get_by_test_id("saved-card-message")).to_contain_text("5 credits added")
    payment = Payment.objects.get(user__email="saver@example.com")
    assert payment.status == "succeeded"
    assert get_balance(payment.user) == 5

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("remove-card").click()
    expect(page.get_by_test_id("saved-card-message")).to_contain_text("removed")
    expect(page.get_by_test_id("save-card")).to_be_visible()
    assert not SavedCard.objects.exists()
    assert not page.problems, page.problems
