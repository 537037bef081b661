"""What a newcomer reads and meets: the greeting, the one-click fortune that survives a reload,
sign-up errors under their own field, sentence case, times with their zone, the support contact,
the favicon, the 404 page and the sign-in reason, the development `.env`, and the admin's pages for
saved cards and auto-recharge."""

import os
import re
from http import HTTPStatus
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse
from django.utils import timezone

from billing import ledger
from billing.models import AutoRecharge, CreditPack, LedgerEntry, Payment, SavedCard
from core.env import read_dotenv
from tests.test_settings import manage

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db


def fund(user, credits):
    ledger.add_credits(user, credits, kind=LedgerEntry.Kind.BONUS, reason="seed")


def text(response) -> str:
    return response.content.decode()


# --- the greeting and the fortune ------------------------------------------------------------------


def test_a_new_user_is_welcomed_and_a_returning_one_welcomed_back(signed_in_client, user):
    first = text(signed_in_client.get("/"))
    assert '<h1 data-testid="greeting">Welcome</h1>' in first
    assert "Welcome back" not in first
    fund(user, 1)
    assert "Welcome back" not in text(signed_in_client.get("/")), "a gift is not a visit"
    signed_in_client.post("/fortune/")
    assert '<h1 data-testid="greeting">Welcome back</h1>' in text(signed_in_client.get("/"))


def test_home_tells_the_fortune_in_one_click_and_a_reload_neither_loses_it_nor_charges(signed_in_client, user):
    fund(user, 2)
    home = text(signed_in_client.get("/"))
    button = re.search(r'<form method="post" action="/fortune/"[^>]*>.*?</form>', home, re.S).group(0)
    assert 'class="button button-primary" data-testid="home-fortune"' in button

    posted = signed_in_client.post("/fortune/")
    assert posted.status_code == HTTPStatus.FOUND and posted["Location"] == "/fortune/"
    page = text(signed_in_client.get("/fortune/"))
    assert 'data-testid="fortune"' in page and "1 credit spent, 1 left." in page
    told = re.search(r'<p class="fortune-text">(.*?)</p>', page).group(1)
    for _ in range(2):  # reloads: the same fortune, no charge
        again = text(signed_in_client.get("/fortune/"))
        assert f'<p class="fortune-text">{told}</p>' in again
    assert ledger.get_balance(user) == 1
    assert LedgerEntry.objects.filter(kind="capture", reason="Fortune told").count() == 1


def test_at_zero_credits_the_fortune_button_steps_back_for_add_credits(signed_in_client):
    for path, testid in (("/", "home-fortune"), ("/fortune/", "spend")):
        html = text(signed_in_client.get(path))
        assert f'class="button" data-testid="{testid}"' in html, path
        assert f'class="button button-primary" data-testid="{testid}"' not in html, path
        assert 'href="/billing/#add-credits" data-add-credits data-testid="get-credits">Add credits</a>' in html, path


def test_the_long_fortune_survives_a_reload_too(signed_in_client, user):
    fund(user, 3)
    assert signed_in_client.post("/fortune/long/")["Location"] == "/fortune/long/"
    page = text(signed_in_client.get("/fortune/long/"))
    assert "Your long fortune" in page and "1 credit spent, 2 left." in page
    assert text(signed_in_client.get("/fortune/long/")).count('data-testid="fortune"') == 1
    assert ledger.get_balance(user) == 2


# --- sign-up errors, sentence case ------------------------------------------------------------------


def field_block(html: str, name: str) -> str:
    return re.search(rf'<div class="form-field[^"]*" data-field="{name}">(.*?)\n</div>', html, re.S).group(1)


def test_a_short_password_error_sits_under_the_password(client):
    response = client.post(
        "/accounts/signup/", {"email": "new@example.com", "password1": "short", "password2": "short"}
    )
    assert response.status_code == HTTPStatus.OK
    html = text(response)
    password = field_block(html, "password1")
    assert "This password is too short" in password
    assert password.index('name="password1"') < password.index('class="errorlist"')
    assert "errorlist" not in field_block(html, "email")


@pytest.mark.parametrize("path", ["/", "/accounts/login/", "/accounts/signup/", "/accounts/password/reset/"])
def test_signed_out_pages_are_in_sentence_case(client, path):
    html = text(client.get(path))
    for title_case in ("Add Credits", "Sign Up", "Sign In", "Sign Out", "Password Reset", "Reset My Password"):
        assert title_case not in html, (path, title_case)


@pytest.mark.parametrize("path", ["/", "/billing/", "/fortune/", "/accounts/logout/", "/accounts/password/change/"])
def test_signed_in_pages_are_in_sentence_case(signed_in_client, path):
    html = text(signed_in_client.get(path))
    assert "Add credits" in html or "Sign out" in html, path
    for title_case in ("Add Credits", "Sign Up", "Sign In", "Sign Out", "Change Password"):
        assert title_case not in html, (path, title_case)


def test_the_not_enough_credits_page_says_add_credits(signed_in_client):
    html = text(signed_in_client.post("/fortune/"))
    assert ">Add credits</a>" in html and "Add Credits" not in html


# --- times ------------------------------------------------------------------------------------------


def test_customer_times_show_their_zone(signed_in_client, user):
    pack = CreditPack.objects.get(slug="starter")
    moment = timezone.now().replace(hour=19, minute=58)
    payment = Payment.objects.create(
        user=user, pack=pack, credits=pack.credits, amount=pack.amount, currency=pack.currency, status="failed"
    )
    Payment.objects.filter(pk=payment.pk).update(created_at=moment)
    html = text(signed_in_client.get("/billing/"))
    assert f"{moment:%-d %b %Y}, 19:58 UTC" in html


def test_the_admin_shows_one_24_hour_format(admin_client, user):
    fund(user, 5)
    entry = LedgerEntry.objects.get()
    when = timezone.localtime(entry.created_at)
    expected = f"{when:%-d %b %Y}, {when:%H:%M}"
    for url in (
        reverse("admin:billing_ledgerentry_changelist"),
        reverse("admin:billing_ledgerentry_change", args=[entry.pk]),
        reverse("admin:billing_profile_change", args=[user.profile.pk]),
    ):
        html = text(admin_client.get(url))
        assert expected in html, url
        assert not re.search(r"\d(:\d\d)? ?[ap]\.m\.", html), url


# --- support contact, favicon, 404, sign-in reason -------------------------------------------------------


def test_the_support_contact_is_in_every_footer_and_on_the_password_reset_page(client, settings):
    settings.SUPPORT_EMAIL = "help@credits.example"
    for path in ("/", "/accounts/login/", "/accounts/password/reset/"):
        assert 'href="mailto:help@credits.example"' in text(client.get(path)), path
    reset = text(client.get("/accounts/password/reset/"))
    assert "contact us" not in reset
    assert re.search(r'data-testid="support-contact">[^<]*password[^<]*<a href="mailto:help@credits.example"', reset)


def test_favicon_ico_leads_to_the_sites_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == HTTPStatus.MOVED_PERMANENTLY
    assert response["Location"].endswith("/favicon.svg")
    icon = Path(finders.find("favicon.svg"))
    assert icon.read_text().startswith("<svg")
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in text(client.get("/"))


def test_a_missing_page_is_the_sites_own_404(client):
    response = client.get("/billing/no-such-page/")
    assert response.status_code == HTTPStatus.NOT_FOUND
    html = text(response)
    assert "Page not found" in html and 'href="/static/css/site.css"' in html
    assert 'href="/accounts/login/?next=/billing/"' in html


def test_with_debug_on_the_technical_404_keeps_its_inline_styles(client, settings):
    settings.DEBUG = True
    missing = client.get("/no-such-page/")
    assert missing.status_code == HTTPStatus.NOT_FOUND
    assert "style-src 'self' 'unsafe-inline'" in missing["Content-Security-Policy"]
    assert "'unsafe-inline'" not in client.get("/")["Content-Security-Policy"]
    settings.DEBUG = False
    assert "'unsafe-inline'" not in client.get("/no-such-page/")["Content-Security-Policy"]


def test_signed_out_billing_leads_to_a_sign_in_that_says_why(client):
    response = client.get("/billing/", follow=True)
    assert response.redirect_chain[-1][0] == "/accounts/login/?next=/billing/"
    assert "Sign in to see your credits and buy more" in text(response)
    assert "Sign in to see your credits" not in text(client.get("/accounts/login/"))


# --- billing's nits and the admin of saved cards and auto-recharge ----------------------------------------


@pytest.fixture
def auto_recharge_on(user):
    return turn_on_auto_recharge(user)


def turn_on_auto_recharge(user) -> AutoRecharge:
    """A saved Visa ending 4242 and auto-recharge on, agreed to in its consent sentence."""
    SavedCard.objects.create(
        profile=user.profile,
        stripe_payment_method_id="pm_words",
        brand="visa",
        last4="4242",
        exp_month=12,
        exp_year=2034,
    )
    return AutoRecharge.objects.create(
        profile=user.profile,
        enabled=True,
        pack=CreditPack.objects.get(slug="starter"),
        threshold=3,
        monthly_limit=2,
        consent_text="When your balance falls below 3, charge your Visa ending 4242 $5.00 for 5 credits, "
        "at most 2 times a month.",
        consented_at=timezone.now(),
    )


def test_the_agreed_consent_is_marked_for_the_form_to_hide(signed_in_client, auto_recharge_on):
    html = text(signed_in_client.get("/billing/"))
    assert html.count(auto_recharge_on.consent_text) == 2  # the sentence shown, and the one the form compares with
    assert f'data-agreed="{auto_recharge_on.consent_text}"' in html


def test_the_admin_lists_saved_cards_and_auto_recharge_read_only(admin_client, auto_recharge_on):
    card = auto_recharge_on.profile.saved_card
    when = timezone.localtime(auto_recharge_on.consented_at)
    listed = text(admin_client.get(reverse("admin:billing_autorecharge_changelist")))
    assert "alice@example.com" in listed and f"{when:%-d %b %Y}, {when:%H:%M}" in listed
    detail = text(admin_client.get(reverse("admin:billing_autorecharge_change", args=[auto_recharge_on.pk])))
    assert auto_recharge_on.consent_text in detail and f"{when:%H:%M}" in detail
    assert 'name="_save"' not in detail
    cards = text(admin_client.get(reverse("admin:billing_savedcard_changelist")))
    assert "Visa •••• 4242" in cards and "12/2034" in cards
    assert admin_client.get(reverse("admin:billing_savedcard_change", args=[card.pk])).status_code == HTTPStatus.OK
    assert admin_client.get(reverse("admin:billing_savedcard_add")).status_code == HTTPStatus.FORBIDDEN


def test_the_standalone_layout_has_an_account_menu(signed_in_client, settings):
    settings.BILLING_BASE_TEMPLATE = "billing/standalone.html"
    html = text(signed_in_client.get("/billing/"))
    assert 'data-testid="account-menu"' in html
    assert '<form method="post" action="/accounts/logout/"' in html and ">Sign out</button>" in html
    assert 'href="/accounts/password/change/"' in html


# --- the development .env -------------------------------------------------------------------------------


def test_read_dotenv_takes_comments_quotes_and_export(tmp_path):
    path = tmp_path / ".env"
    path.write_text(
        "# a comment\n\nDEBUG=1\nexport SECRET_KEY='a b # c'\nSTRIPE_API_BASE=\"http://127.0.0.1:8420\"\n"
        "NAME=plain value # why\nEMPTY=\n"
    )
    assert read_dotenv(path) == {
        "DEBUG": "1",
        "SECRET_KEY": "a b # c",
        "STRIPE_API_BASE": "http://127.0.0.1:8420",
        "NAME": "plain value",
        "EMPTY": "",
    }
    path.write_text("DEBUG=1\nthis is not a setting\n")
    with pytest.raises(Exception, match="line 2"):
        read_dotenv(path)


def test_manage_py_runs_on_a_dotenv_and_the_environment_wins(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        (ROOT / ".env.development.example").read_text().replace("__generated__", "x" * 50)
        + f"DATABASE_URL=sqlite:///{tmp_path / 'dev.sqlite3'}\n"
    )
    without = manage("check", env={"DOTENV_PATH": ""})
    assert without.returncode != 0 and "must be set" in without.stderr
    assert manage("check", env={"DOTENV_PATH": str(dotenv)}).returncode == 0
    code = "from django.conf import settings; print(settings.DEBUG, settings.STRIPE_API_BASE, settings.SUPPORT_EMAIL)"
    shown = manage("shell", "-v", "0", "-c", code, env={"DOTENV_PATH": str(dotenv), "SUPPORT_EMAIL": "ops@example.com"})
    assert shown.stdout.split() == ["True", "http://127.0.0.1:8420", "ops@example.com"], shown.stderr


def test_the_tests_never_read_a_developers_dotenv():
    assert os.environ.get("DOTENV_PATH") == ""
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_make_run_links_emails_to_its_own_port_unless_told_otherwise():
    from scripts.dev import development_defaults

    env = {}
    development_defaults(env, "8123")
    assert env["BILLING_SITE_URL"] == "http://127.0.0.1:8123"  # receipts link to the site that sent them
    chosen = {"BILLING_SITE_URL": "https://credits.example.com"}  # from the environment or .env
    development_defaults(chosen, "8123")
    assert chosen["BILLING_SITE_URL"] == "https://credits.example.com"


@pytest.mark.django_db
def test_the_email_confirmation_subject_is_in_sentence_case(client, settings):
    from django.core import mail

    settings.ACCOUNT_EMAIL_VERIFICATION = "optional"
    password = "a long enough test passphrase"
    data = {"email": "subject@example.com", "password1": password, "password2": password}
    client.post("/accounts/signup/", data)
    [message] = mail.outbox
    assert message.subject.endswith("Please confirm your email address"), message.subject
