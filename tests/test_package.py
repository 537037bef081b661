"""billing as a reusable app (docs/INSTALL.md): it imports nothing of the project, reads every
setting through billing/conf.py (live, with defaults), its URLs are includes, and its pages fit
any base template or none. The wheel itself is proved by scripts/stock_project_check.py."""

import ast
import re
from http import HTTPStatus
from pathlib import Path

import pytest
from django.template import Context, Template
from django.test import RequestFactory
from django.urls import get_resolver

from billing import ledger
from billing.conf import DEFAULTS, app_settings
from billing.models import LedgerEntry

BILLING = Path(__file__).resolve().parent.parent / "billing"
PROJECT_PACKAGES = {"core", "accounts", "tests", "bench", "reliability", "scripts", "testbed"}


def billing_modules():
    return sorted(p for p in BILLING.rglob("*.py") if "migrations" not in p.parts)


def imported_top_levels(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", billing_modules(), ids=lambda p: str(p.relative_to(BILLING)))
def test_billing_imports_nothing_of_the_project(path):
    assert not imported_top_levels(path) & PROJECT_PACKAGES


@pytest.mark.parametrize("path", billing_modules(), ids=lambda p: str(p.relative_to(BILLING)))
def test_no_setting_is_read_outside_billing_conf(path):
    """Migrations are generated code (they name settings.AUTH_USER_MODEL, as Django writes them)."""
    if path.name == "conf.py":
        return
    source = path.read_text()
    assert "django.conf import settings" not in source
    assert not re.search(r"(?<![\w.])settings\.[A-Z]", source), "read it through billing.conf.app_settings"
    assert "getattr(settings" not in source


def test_every_setting_has_a_default_and_unset_ones_fall_back_to_it(settings):
    settings.BILLING_LEDGER_PAGE_SIZE = 7
    assert app_settings.BILLING_LEDGER_PAGE_SIZE == 7
    for name in ("BILLING_DEFAULT_PACK", "BILLING_LEDGER_PAGE_SIZE", "BILLING_BASE_TEMPLATE", "STRIPE_TIMEOUT_SECONDS"):
        if hasattr(settings, name):
            delattr(settings, name)
        assert getattr(app_settings, name) == DEFAULTS[name]


def test_reads_are_live(settings):
    settings.BILLING_DEFAULT_PACK = "first"
    assert app_settings.BILLING_DEFAULT_PACK == "first"
    settings.BILLING_DEFAULT_PACK = "second"
    assert app_settings.BILLING_DEFAULT_PACK == "second"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="BILLING_NO_SUCH"):
        app_settings.BILLING_NO_SUCH  # noqa: B018


def test_the_ledger_hot_path_setting_is_a_plain_attribute_read(settings):
    settings.BILLING_LEDGER_PREPARED_STATEMENTS = False
    assert app_settings.BILLING_LEDGER_PREPARED_STATEMENTS is False
    assert app_settings._values["BILLING_LEDGER_PREPARED_STATEMENTS"] is False  # cached, read without a lookup


# --- URLs ----------------------------------------------------------------------------------------


def test_the_emaily_api_is_a_separate_include():
    from billing import urls, urls_emaily

    assert {p.name for p in urls.urlpatterns} == {
        "index",
        "receipt",
        "charge",
        "charge_confirm",
        "charge_resume",
        "card_setup",
        "card_save",
        "card_remove",
        "auto_recharge",
        "webhook",
    }
    assert {p.name for p in urls_emaily.urlpatterns} == {"api_current_user", "api_stripe", "api_logout"}
    assert get_resolver().resolve("/api/current_user").url_name == "api_current_user"


def test_api_logout_goes_to_logout_redirect_url(signed_in_client, settings):
    settings.LOGOUT_REDIRECT_URL = "/goodbye/"
    response = signed_in_client.get("/api/logout")
    assert response.status_code == HTTPStatus.FOUND and response["Location"] == "/goodbye/"


def test_the_not_enough_credits_page_links_home_through_a_setting(signed_in_client, settings):
    settings.BILLING_HOME_URL = "/start/"
    response = signed_in_client.post("/fortune/")
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert b'href="/start/">Back home' in response.content


# --- templates -----------------------------------------------------------------------------------


def test_billing_pages_use_the_projects_base_template(signed_in_client):
    html = signed_in_client.get("/billing/").content.decode()
    assert "site-header" in html and "billing-standalone" not in html  # this project's templates/base.html


def test_without_a_base_template_billing_uses_its_own_layout(signed_in_client, settings):
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": []}]  # a project with no templates of its own
    response = signed_in_client.get("/billing/")
    assert response.status_code == HTTPStatus.OK
    html = response.content.decode()
    assert "billing-standalone" in html and "billing/billing.css" in html
    assert 'id="header-credits-value">0<' in html and 'id="add-credits-dialog"' in html


def test_a_named_base_template_is_used(signed_in_client, settings):
    settings.BILLING_BASE_TEMPLATE = "billing/standalone.html"
    assert b"billing-standalone" in signed_in_client.get("/billing/").content


def render(source: str, user, **context) -> str:
    request = RequestFactory().get("/")
    request.user = user
    return Template("{% load billing %}" + source).render(Context({"request": request, "user": user, **context}))


def test_the_header_tags_show_the_balance_and_the_button(user):
    ledger.add_credits(user, 3, kind=LedgerEntry.Kind.BONUS, reason="seed")
    html = render("{% billing_header %}", user)
    assert 'id="header-credits-value">3<' in html and "data-add-credits" in html
    assert "data-add-credits" not in render("{% credits_balance %}", user)
    assert "header-credits-value" not in render("{% add_credits_button %}", user)


def test_the_header_tags_show_nothing_to_anonymous_visitors(db):
    from django.contrib.auth.models import AnonymousUser

    assert render("{% billing_header %}{% billing_checkout %}", AnonymousUser()).strip() == ""


def test_the_checkout_is_rendered_once_per_page(user):
    html = render("{% billing_checkout %}{% billing_checkout %}", user, csrf_token="t")
    assert html.count('id="add-credits-dialog"') == 1
    assert html.count("billing/billing.js") == 1


def test_the_header_tag_reuses_a_balance_already_in_the_context(user, django_assert_num_queries):
    with django_assert_num_queries(0):
        html = render("{% billing_header %}", user, header_credits=42)
    assert 'id="header-credits-value">42<' in html
