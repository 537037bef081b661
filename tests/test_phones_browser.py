"""Every page at 390 px, signed in with a history (payments, ledger entries, grants, a hold, a saved
card) and signed out: no horizontal scrolling, and no box that scrolls or clips sideways (a table
squeezed into a scrolling box still hides its columns from the reader). Each page is also
screenshotted at 1280 and 390 px under SHOTS_DIR (or $BILLING_SHOTS) to look at."""

import os
import tempfile
from datetime import timedelta

import pytest

from tests.test_browser import chromium, page, sign_up  # noqa: F401 - the shared browser fixtures

pytestmark = pytest.mark.browser

PHONE = 390
DESKTOP = 1280
SHOTS_DIR = os.environ.get("BILLING_SHOTS") or os.path.join(tempfile.gettempdir(), "shots_phones")

# Every element that scrolls or clips sideways: overflow-x auto, scroll or hidden with more content
# than room. Elements that are not rendered have no width either way.
CLIPPED_JS = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('body *')) {
    const overflow = getComputedStyle(el).overflowX;
    if (['auto', 'scroll', 'hidden'].includes(overflow) && el.scrollWidth > el.clientWidth) {
      bad.push(`${el.tagName.toLowerCase()}.${el.className} (${el.scrollWidth} > ${el.clientWidth}, ${overflow})`);
    }
  }
  return bad;
}"""


def give_history(email):
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from billing import ledger
    from billing.models import CreditGrant, LedgerEntry, Payment, Profile, SavedCard
    from tests.seed import starter_pack

    user = get_user_model().objects.get(email=email)
    pack = starter_pack()
    common = {"user": user, "pack": pack, "credits": pack.credits, "amount": pack.amount, "currency": pack.currency}
    Payment.objects.create(
        status="succeeded", stripe_payment_intent_id="pi_phone_paid", card_brand="visa", card_last4="4242", **common
    )
    refunded = Payment.objects.create(
        status="refunded",
        stripe_payment_intent_id="pi_phone_refunded",
        amount_refunded=pack.amount,
        card_brand="mastercard",
        card_last4="4444",
        **common,
    )
    Payment.objects.create(
        status="failed",
        stripe_payment_intent_id="pi_phone_failed",
        failure_message="The provided PaymentMethod has failed authentication. You can provide payment_method_data "
        "or a new PaymentMethod to attempt to fulfill this PaymentIntent again.",
        **common,
    )
    Payment.objects.create(status="requires_action", stripe_payment_intent_id="pi_phone_3ds", **common)
    ledger.add_credits(user, 10, kind=LedgerEntry.Kind.PURCHASE, reason="Purchased Starter Pack (5 credits) twice")
    ledger.add_credits(
        user,
        3,
        kind=LedgerEntry.Kind.BONUS,
        reason="A rather long reason typed by staff, with no spaces: abcdefghij" * 2,
    )
    now = timezone.now()
    gone = ledger.grant_credits(user, 2, reason="Trial credits", expires_at=now + timedelta(days=1))
    ledger.grant_credits(user, 3, reason="Welcome bonus", expires_at=now + timedelta(days=30))
    CreditGrant.objects.filter(entry=gone).update(expires_at=now - timedelta(seconds=1))
    Profile.objects.filter(user=user).update(next_expiry=now - timedelta(seconds=1))
    ledger.expire_credits()
    ledger.hold_credits(user, 2, reason="Long fortune being written", expires_in=timedelta(minutes=10))
    ledger.hold_credits(user, 1, reason="Nightly export", expires_in=timedelta(days=2))
    SavedCard.objects.create(
        profile=user.profile,
        stripe_payment_method_id="pm_phone",
        brand="visa",
        last4="4242",
        exp_month=12,
        exp_year=2034,
    )
    return refunded.reference


def check(tab, name, open_page):
    """Loads the page at both widths: screenshots each, and asserts the phone width fits."""
    for width in (DESKTOP, PHONE):
        tab.set_viewport_size({"width": width, "height": 900})
        open_page()
        tab.screenshot(path=os.path.join(SHOTS_DIR, f"{name}-{width}.png"), full_page=True)
        if width == PHONE:
            # The first screen too, at full size: the whole page shrinks too far to read.
            tab.screenshot(path=os.path.join(SHOTS_DIR, f"{name}-{width}-top.png"))
            scroll_width = tab.evaluate("document.documentElement.scrollWidth")
            assert scroll_width <= PHONE, f"{name}: {scroll_width}px wide at {PHONE}px"
            clipped = tab.evaluate(CLIPPED_JS)
            assert clipped == [], f"{name}: {clipped}"


def test_every_page_fits_a_phone(page):  # noqa: F811
    from playwright.sync_api import expect

    os.makedirs(SHOTS_DIR, exist_ok=True)
    sign_up(page, "phone@example.com")
    receipt = f"/billing/receipts/{give_history('phone@example.com')}/"

    for name, path in [
        ("home", "/"),
        ("billing", "/billing/"),
        ("receipt", receipt),
        ("fortune", "/fortune/"),
        ("long-fortune", "/fortune/long/"),
        ("account-email", "/accounts/email/"),
        ("password-change", "/accounts/password/change/"),
    ]:
        check(page, name, lambda path=path: page.goto(path))
    page.set_viewport_size({"width": PHONE, "height": 900})
    page.goto("/billing/")
    # The header's whole nav (credits, Add credits, the account menu) on one row below the brand.
    middles = set()
    for sel in (
        "[data-testid=header-credits]",
        "[data-testid=header-add-credits]",
        "[data-testid=account-menu] summary",
    ):
        box = page.locator(sel).bounding_box()
        middles.add(box["y"] + box["height"] / 2)
    assert max(middles) - min(middles) < 10, middles
    # Each stacked row still shows the amount and status, and each ledger entry its change and balance.
    for table in ("#payments", "#ledger"):
        for cell in page.locator(f"{table} tbody tr").first.locator("td").all():
            box = cell.bounding_box()
            assert box and box["width"] > 0 and box["x"] + box["width"] <= PHONE, (table, cell.inner_text(), box)

    def open_dialog():
        page.goto("/billing/")
        page.get_by_test_id("header-add-credits").click()
        expect(page.locator("#add-credits-dialog")).to_be_visible()

    check(page, "add-credits-dialog", open_dialog)

    # The receipt printed: the receipt alone, black on white, without the site's header and buttons.
    page.set_viewport_size({"width": DESKTOP, "height": 900})
    page.goto(receipt)
    page.emulate_media(media="print")
    page.screenshot(path=os.path.join(SHOTS_DIR, "receipt-print.png"), full_page=True)
    expect(page.locator(".site-header")).to_be_hidden()
    expect(page.locator(".receipt-actions")).to_be_hidden()
    expect(page.get_by_test_id("receipt")).to_contain_text("Mastercard \u2022\u2022\u2022\u2022 4444")
    assert page.get_by_test_id("receipt").evaluate("el => getComputedStyle(el).color") == "rgb(0, 0, 0)"
    page.emulate_media(media="screen")

    page.goto("/")
    page.locator("[data-testid=account-menu] summary").click()  # sign out is in the account menu
    page.locator("form[action='/accounts/logout/'] button").click()
    sign_up(page, "broke@example.com")

    def spend_with_nothing():
        page.goto("/fortune/")
        page.get_by_test_id("spend").click()
        expect(page.locator("body")).to_contain_text("credit")

    check(page, "insufficient-credits", spend_with_nothing)
    page.goto("/")
    page.locator("[data-testid=account-menu] summary").click()  # sign out is in the account menu
    page.locator("form[action='/accounts/logout/'] button").click()
    for name, path in [("home-signed-out", "/"), ("sign-in", "/accounts/login/"), ("sign-up", "/accounts/signup/")]:
        check(page, name, lambda path=path: page.goto(path))
    assert not page.problems, page.problems
