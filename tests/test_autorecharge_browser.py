"""Auto-recharge in a real browser against the live localstripe: with a saved card, the form shows
the consent sentence built from its values, turns auto-recharge on, and the page then says so."""

import os

import pytest

from billing.models import AutoRecharge
from tests.test_browser import chromium, page, sign_up  # noqa: F401 - the shared browser fixtures
from tests.test_cards_browser import fill_saved_card_form

pytestmark = pytest.mark.browser


def test_turn_auto_recharge_on_with_the_consent_wording(page):  # noqa: F811
    from playwright.sync_api import expect

    sign_up(page, "topup@example.com")
    page.goto("/billing/")
    expect(page.get_by_test_id("auto-recharge")).to_contain_text("Save a card first")
    page.get_by_test_id("save-card").click()
    fill_saved_card_form(page, "4242 4242 4242 4242")
    page.get_by_test_id("save-card-submit").click()
    expect(page.get_by_test_id("saved-card-number")).to_have_text("•••• 4242")

    page.goto("/billing/#auto-recharge")
    page.get_by_test_id("auto-recharge-threshold").fill("3")
    page.get_by_test_id("auto-recharge-limit").fill("2")
    sentence = (
        "When your balance falls below 3, charge your Visa ending 4242 $5.00 for 5 credits, at most 2 times a month."
    )
    expect(page.get_by_test_id("auto-recharge-consent")).to_have_text(sentence)
    page.get_by_test_id("auto-recharge-limit").fill("40")
    page.get_by_test_id("auto-recharge-on-button").click()
    expect(page.get_by_test_id("auto-recharge-error")).to_contain_text("from 1 to 31")
    page.get_by_test_id("auto-recharge-limit").fill("2")
    page.get_by_test_id("auto-recharge-on-button").click()
    expect(page.get_by_test_id("auto-recharge-on")).to_contain_text(sentence)
    # The sentence agreed to shows once, above the form; the form's own returns only for changed values.
    consent = page.get_by_test_id("auto-recharge-consent")
    expect(consent).to_be_hidden()
    page.get_by_test_id("auto-recharge-threshold").fill("4")
    expect(consent).to_be_visible()
    page.get_by_test_id("auto-recharge-threshold").fill("3")
    expect(consent).to_be_hidden()
    setting = AutoRecharge.objects.get(profile__user__email="topup@example.com")
    assert setting.enabled and setting.consent_text == sentence

    shots = os.environ.get("BILLING_SHOTS")
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto("/billing/#auto-recharge")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{overflow}px of horizontal scrolling at {width}px"
        if shots:
            page.screenshot(path=os.path.join(shots, f"auto-recharge-{width}.png"), full_page=True)

    page.get_by_test_id("auto-recharge-off-button").click()
    expect(page.get_by_test_id("auto-recharge-off")).to_be_visible()
    assert not AutoRecharge.objects.get(pk=setting.pk).enabled
    assert not page.problems, page.problems
