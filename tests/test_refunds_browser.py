"""The refund confirmation page in a real browser: staff see the preview, refund part, and the
page is screenshotted at 1280 wide (under /tmp/shots_refund/) for a person to look at."""

import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from billing import charges, ledger
from tests.test_browser import chromium, page  # noqa: F401 - the shared browser fixtures

pytestmark = pytest.mark.browser

SHOTS = Path(tempfile.gettempdir()) / "shots_refund"


def test_staff_refund_part_of_a_payment_from_the_confirmation_page(page, live_server, make_user, make_staff):  # noqa: F811
    from playwright.sync_api import expect

    customer = make_user("alice@example.com")
    payment = charges.start_charge(customer, pack_slug="starter", payment_method="pm_card_visa").payment
    ledger.spend_credits(customer, 4, reason="used the product")
    staff = make_staff("refunder@example.com", "view_payment", "refund_payment")
    session = Client()
    session.force_login(staff)
    page.context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": session.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto("/admin/billing/payment/")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "payments_list.png"), full_page=True)
    expect(page.locator("#result_list")).to_contain_text("Visa \u2022\u2022\u2022\u2022 4242")  # the card column
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    # and no column is cut off inside the list's own box
    assert page.evaluate(
        "[...document.querySelectorAll('#result_list th')].every(th => th.scrollWidth <= th.clientWidth)"
    )
    last = page.locator("#result_list thead th").last.bounding_box()
    assert (
        last["x"] + last["width"]
        <= page.locator("#changelist-form").bounding_box()["x"]
        + page.locator("#changelist-form").bounding_box()["width"]
    )
    page.locator(f"input[name=_selected_action][value='{payment.pk}']").check()
    page.select_option("select[name=action]", "refund_through_stripe")
    page.locator("button[name=index]").click()  # the admin's "Go"
    expect(page.get_by_test_id("refund-preview")).to_contain_text("take back 1 credit")
    expect(page.get_by_test_id("refund-shortfall")).to_contain_text("4 more credits are due back")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "refund_full.png"), full_page=True)

    page.fill("input[name=amount]", "9.00")
    page.get_by_role("button", name="Confirm the refund").click()
    expect(page.locator(".errornote")).to_contain_text("Nothing was refunded")
    page.screenshot(path=str(SHOTS / "refund_bad_amount.png"), full_page=True)

    page.fill("input[name=amount]", "1.00")
    page.get_by_role("button", name="Confirm the refund").click()
    expect(page.locator(".messagelist")).to_contain_text("refunded $1.00 in total; 1 credits clawed back")
    page.screenshot(path=str(SHOTS / "refund_done.png"), full_page=True)
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.credits_clawed_back) == (100, 1)
