"""The newcomer's pages in a real browser at 1280 and 390 px: a new user's welcome, the fortune told
from home in one click and still there after a reload, sign-up errors under their field, the
password-reset page with the support contact, the 404 page, the sign-in reached from /billing/,
and the admin's saved cards and auto-recharge. No horizontal scrolling on the customer's pages, no
script errors or CSP violations; screenshots under SHOTS_DIR (or $BILLING_SHOTS) to look at."""

import os
import tempfile

import pytest

from tests.test_browser import PASSWORD, chromium, page, sign_up  # noqa: F401 - the shared browser fixtures

pytestmark = pytest.mark.browser

WIDTHS = (1280, 390)
SHOTS_DIR = os.environ.get("BILLING_SHOTS") or os.path.join(tempfile.gettempdir(), "shots_wording")


def shoot(tab, name, open_page, *, fits=True):
    for width in WIDTHS:
        tab.set_viewport_size({"width": width, "height": 900})
        open_page()
        tab.screenshot(path=os.path.join(SHOTS_DIR, f"{name}-{width}.png"), full_page=True)
        if fits:
            scroll_width = tab.evaluate("document.documentElement.scrollWidth")
            assert scroll_width <= width, f"{name}: {scroll_width}px wide at {width}px"


def test_the_newcomers_pages(page):  # noqa: F811
    from django.contrib.auth import get_user_model
    from playwright.sync_api import expect

    from billing import ledger
    from billing.models import AutoRecharge, LedgerEntry
    from tests.test_wording import turn_on_auto_recharge

    os.makedirs(SHOTS_DIR, exist_ok=True)
    sign_up(page, "newcomer@example.com")
    expect(page.get_by_test_id("greeting")).to_have_text("Welcome")
    shoot(page, "home-new", lambda: page.goto("/"))
    expect(page.get_by_test_id("home-fortune")).not_to_have_class("button button-primary")

    user = get_user_model().objects.get(email="newcomer@example.com")
    ledger.add_credits(user, 3, kind=LedgerEntry.Kind.BONUS, reason="Welcome bonus")
    page.goto("/")
    page.get_by_test_id("home-fortune").click()  # one click: paid, told
    expect(page.get_by_test_id("fortune")).to_contain_text("1 credit spent, 2 left.")
    told = page.locator(".fortune-text").inner_text()
    page.reload()
    expect(page.locator(".fortune-text")).to_have_text(told)
    expect(page.get_by_test_id("header-credits")).to_have_text("Credits: 2")
    shoot(page, "fortune", lambda: page.goto("/fortune/"))
    page.goto("/")
    expect(page.get_by_test_id("greeting")).to_have_text("Welcome back")
    shoot(page, "home-back", lambda: page.goto("/"))

    turn_on_auto_recharge(user)
    shoot(page, "billing", lambda: page.goto("/billing/#auto-recharge"))
    expect(page.get_by_test_id("auto-recharge-consent")).to_be_hidden()

    page.locator("[data-testid=account-menu] summary").click()
    page.locator("form[action='/accounts/logout/'] button").click()
    expect(page.get_by_role("link", name="Sign up", exact=True)).to_be_visible()

    def signup_with_errors():
        page.goto("/accounts/signup/")
        page.fill("input[name=email]", "short@example.com")
        page.fill("input[name=password1]", "short")
        page.fill("input[name=password2]", "short")
        page.get_by_role("button", name="Sign up", exact=True).click()
        expect(page.locator("[data-field=password1] .errorlist")).to_contain_text("too short")

    shoot(page, "signup-errors", signup_with_errors)
    expect(page.locator("[data-field=email] .errorlist")).to_have_count(0)
    shoot(page, "password-reset", lambda: page.goto("/accounts/password/reset/"))
    expect(page.get_by_test_id("support-contact").last).to_contain_text("@")
    shoot(page, "not-found", lambda: page.goto("/billing/nothing-here/"))
    expect(page.get_by_test_id("not-found")).to_be_visible()
    shoot(page, "login-from-billing", lambda: page.goto("/billing/"))
    expect(page.get_by_test_id("login-reason")).to_have_text("Sign in to see your credits and buy more.")
    assert not page.problems, page.problems

    get_user_model().objects.create_user(email="root@example.com", password=PASSWORD, is_staff=True, is_superuser=True)
    page.fill("input[name=login]", "root@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_test_id("header-credits")).to_be_visible()
    for model in ("autorecharge", "savedcard", "payment", "ledgerentry"):
        shoot(page, f"admin-{model}", lambda model=model: page.goto(f"/admin/billing/{model}/"), fits=False)
        expect(page.locator("#changelist")).to_be_visible()
    setting = AutoRecharge.objects.get()
    shoot(
        page,
        "admin-autorecharge-page",
        lambda: page.goto(f"/admin/billing/autorecharge/{setting.pk}/change/"),
        fits=False,
    )
    expect(page.locator("body")).to_contain_text("at most 2 times a month")
