"""A customer's whole journey and a staff member's, in a real browser against the live localstripe,
once at 1280 px and once at 390 px: signed out, a new user, paying, a declined card, 3-D Secure
passed, refused and left open, spending, the receipt, and the admin. Every customer-facing state
must fit the width (no horizontal scrolling, no box that scrolls or clips sideways), with no
script errors or CSP violations. Each state is screenshotted under SHOTS_DIR (or $BILLING_SHOTS)
for a person to look at."""

import os
import tempfile

import pytest
from django.conf import settings
from django.test import Client

from billing.models import Payment
from tests.test_browser import PASSWORD, chromium, fill_card, page, sign_up  # noqa: F401 - the shared browser fixtures
from tests.test_phones_browser import CLIPPED_JS

pytestmark = pytest.mark.browser

SHOTS_DIR = os.environ.get("BILLING_SHOTS") or os.path.join(tempfile.gettempdir(), "shots_walkthrough")
THREE_D_SECURE = "4000002500003155"
DECLINED = "4000000000000341"


class Walk:
    def __init__(self, tab, width):
        self.tab, self.width = tab, width
        tab.set_viewport_size({"width": width, "height": 900})

    def shot(self, name, *, fits=True):
        """Screenshot the state; a customer's state must fit the width."""
        self.tab.screenshot(path=os.path.join(SHOTS_DIR, f"{name}-{self.width}.png"), full_page=True)
        if not fits:
            return
        scroll_width = self.tab.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= self.width, f"{name}: {scroll_width}px wide at {self.width}px"
        assert self.tab.evaluate(CLIPPED_JS) == [], name

    def buy(self, number):
        self.tab.goto("/billing/")
        self.tab.locator("[data-buy-pack=starter]").click()
        fill_card(self.tab, number)
        self.tab.get_by_test_id("pay-submit").click()


def sign_in_as(page, live_server, user):  # noqa: F811
    session = Client()
    session.force_login(user)
    page.context.clear_cookies()
    page.context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": session.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )


@pytest.mark.parametrize("width", [1280, 390])
def test_the_whole_journey_fits_and_reads_well(page, live_server, width):  # noqa: F811
    from django.contrib.auth import get_user_model
    from playwright.sync_api import expect

    os.makedirs(SHOTS_DIR, exist_ok=True)
    walk = Walk(page, width)
    email = f"walker{width}@example.com"

    # Signed out.
    page.goto("/")
    walk.shot("01-home-signed-out")
    page.goto("/billing/")
    expect(page.locator("body")).to_contain_text("Sign in to see your credits")
    walk.shot("02-billing-signed-out")
    page.goto("/accounts/signup/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password1]", "short")
    page.fill("input[name=password2]", "short")
    page.locator("form button[type=submit]").click()
    expect(page.locator("body")).to_contain_text("too short")
    walk.shot("03-sign-up-errors")
    page.goto("/accounts/password/reset/")
    walk.shot("04-password-reset")

    # A new user.
    sign_up(page, email)
    expect(page.get_by_test_id("greeting")).to_have_text("Welcome")
    walk.shot("05-home-new-user")
    page.goto("/billing/")
    walk.shot("06-billing-new-user")
    page.get_by_test_id("header-add-credits").click()
    expect(page.locator("#add-credits-dialog")).to_be_visible()
    walk.shot("07-add-credits-dialog")

    # A declined card, then a good one.
    page.keyboard.press("Escape")
    walk.buy(DECLINED)
    expect(page.get_by_test_id("pay-error")).to_contain_text("declined")
    walk.shot("08-declined")
    page.goto("/billing/")
    walk.buy("4242 4242 4242 4242")
    expect(page.get_by_test_id("pay-success")).to_contain_text("5 credits added")
    expect(page.get_by_test_id("header-credits")).to_have_text("Credits: 5")
    walk.shot("09-paid")

    # 3-D Secure: the bank's window, passed; refused; left open.
    walk.buy(THREE_D_SECURE)
    expect(page.get_by_role("button", name="Complete authentication")).to_be_visible()
    walk.shot("10-3ds-challenge", fits=False)  # the stand-in's window, not ours
    page.get_by_role("button", name="Complete authentication").click()
    expect(page.get_by_test_id("header-credits")).to_have_text("Credits: 10")
    walk.shot("11-3ds-passed")
    walk.buy(THREE_D_SECURE)
    page.get_by_role("button", name="Fail authentication").click()
    expect(page.get_by_test_id("pay-error")).to_contain_text("Your bank could not confirm the payment")
    walk.shot("12-3ds-refused")
    walk.buy(THREE_D_SECURE)
    expect(page.get_by_role("button", name="Complete authentication")).to_be_visible()
    page.goto("/billing/")
    expect(page.get_by_test_id("finish-payment")).to_be_visible()
    walk.shot("13-billing-history-3ds-open")

    # Spending, one click from home; the fortune survives a reload without charging again.
    page.goto("/")
    expect(page.get_by_test_id("greeting")).to_have_text("Welcome back")
    walk.shot("14-home-returning")
    page.get_by_test_id("home-fortune").click()
    expect(page.get_by_test_id("header-credits")).to_have_text("Credits: 9")
    page.reload()
    expect(page.get_by_test_id("header-credits")).to_have_text("Credits: 9")
    walk.shot("15-fortune")

    # The receipt of the first purchase, and the account menu.
    paid = Payment.objects.filter(user__email=email, status="succeeded").order_by("pk").first()
    page.goto("/billing/")
    page.locator(f"a[href$='/receipts/{paid.reference}/']").click()
    expect(page.locator("body")).to_contain_text("4242")
    walk.shot("16-receipt")
    page.goto("/billing/")
    page.locator("[data-testid=account-menu] summary").click()
    walk.shot("17-account-menu")
    assert not page.problems, page.problems

    # Staff: the admin pages a support person uses for this customer (Django's admin has its own
    # layout for narrow screens; these are screenshotted, not held to the customer's rule).
    staff = get_user_model().objects.create_superuser(email=f"staff{width}@example.com", password=PASSWORD)
    sign_in_as(page, live_server, staff)
    customer = get_user_model().objects.get(email=email)
    for name, path in [
        ("18-admin-profile", f"/admin/billing/profile/{customer.profile.pk}/change/"),
        ("19-admin-payments", "/admin/billing/payment/"),
        ("20-admin-ledger", "/admin/billing/ledgerentry/"),
        ("21-admin-adjust", f"/admin/billing/profile/{customer.profile.pk}/adjust/"),
    ]:
        page.goto(path)
        expect(page.locator("#content")).to_be_visible()
        walk.shot(name, fits=False)
    page.goto("/admin/billing/payment/")
    page.locator(f"input[name=_selected_action][value='{paid.pk}']").check()
    page.select_option("select[name=action]", "refund_through_stripe")
    page.locator("button[name=index]").click()
    expect(page.get_by_test_id("refund-preview")).to_be_visible()
    walk.shot("22-admin-refund-confirmation", fits=False)
