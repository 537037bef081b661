"""billing's system checks (billing/checks.py): every id, and a clean bill for this project."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks

from core import csp

ROOT = Path(__file__).resolve().parent.parent


def billing_errors() -> list:
    return [e for e in checks.run_checks(include_deployment_checks=False) if e.id.startswith("billing.")]


def ids() -> set[str]:
    return {e.id for e in billing_errors()}


def test_this_projects_settings_pass():
    assert billing_errors() == []


@pytest.mark.parametrize(
    ("setting", "value", "error_id"),
    [
        ("STRIPE_SECRET_KEY", "", "billing.E001"),
        ("STRIPE_SECRET_KEY", None, "billing.E001"),
        ("STRIPE_SECRET_KEY", "pk_test_swapped", "billing.E002"),
        ("STRIPE_PUBLISHABLE_KEY", " ", "billing.E003"),
        ("STRIPE_PUBLISHABLE_KEY", "sk_test_secret_on_the_page", "billing.E004"),
        ("STRIPE_WEBHOOK_SECRET", "", "billing.E005"),
        ("STRIPE_WEBHOOK_SECRET", "sk_test_wrong", "billing.E006"),
        ("BILLING_CHARGE_RATE_LIMIT", "ten a minute", "billing.E007"),
        ("BILLING_CHARGE_RATE_LIMIT", "10/0", "billing.E007"),
        ("STRIPE_TIMEOUT_SECONDS", "soon", "billing.E008"),
        ("STRIPE_TIMEOUT_SECONDS", 0, "billing.E008"),
        ("STRIPE_MAX_NETWORK_RETRIES", 1.5, "billing.E008"),
        ("STRIPE_MAX_NETWORK_RETRIES", -1, "billing.E008"),
        ("BILLING_LEDGER_PAGE_SIZE", "many", "billing.E008"),
        ("BILLING_DEFAULT_PACK", "not a slug!", "billing.E010"),
        ("BILLING_DEFAULT_PACK", None, "billing.E010"),
        ("BILLING_BASE_TEMPLATE", "no/such/base.html", "billing.E011"),
        ("STRIPE_JS_URL", "js.stripe.com/v3/", "billing.E012"),
        ("STRIPE_API_BASE", "localhost:8420", "billing.E012"),
        ("BILLING_SITE_URL", "credits.example.com", "billing.E016"),
        ("BILLING_SITE_URL", "/billing/", "billing.E016"),
        ("BILLING_SITE_URL", "", "billing.W001"),
    ],
)
def test_each_malformed_setting_is_named_by_its_check(settings, setting, value, error_id):
    setattr(settings, setting, value)
    errors = [e for e in billing_errors() if e.id == error_id]
    assert errors, f"{setting}={value!r} should raise {error_id}"
    assert setting in errors[0].msg
    assert ids() == {error_id}  # and nothing else is blamed


def test_a_missing_key_is_a_check_error_not_an_attribute_error(settings):
    del settings.STRIPE_WEBHOOK_SECRET
    assert ids() == {"billing.E005"}


def test_restricted_keys_pass(settings):
    settings.STRIPE_SECRET_KEY = "rk_live_restricted"
    assert ids() == set()


@pytest.mark.parametrize(
    ("directive", "sources"),
    [("script-src", ["'self'"]), ("connect-src", ["'self'"]), ("frame-src", ["'none'"])],
)
def test_a_content_security_policy_that_blocks_stripe_js(settings, directive, sources):
    settings.SECURE_CSP = {**csp.directives(settings.STRIPE_JS_URL, settings.STRIPE_API_BASE), directive: sources}
    errors = billing_errors()
    assert [e.id for e in errors] == ["billing.E009"]
    assert directive in errors[0].msg


def test_a_policy_falls_back_to_default_src_and_understands_wildcards(settings):
    settings.SECURE_CSP = {"default-src": ["'self'", "https://*.stripe.com"]}
    assert ids() == set()
    settings.SECURE_CSP = {"default-src": ["'self'"], "script-src": ["'self'", "https:"]}
    assert ids() == {"billing.E009"}  # connect-src and frame-src fall back to default-src: 'self' only


def test_django_csp_settings_are_read_too(settings):
    settings.SECURE_CSP = None
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": ["'self'"]}}
    assert ids() == {"billing.E009"}


def test_no_declared_policy_is_nothing_to_check(settings):
    settings.SECURE_CSP = None
    assert ids() == set()


def test_manage_py_check_names_the_setting():
    """End to end, as a developer meets it: the check fails and names the setting."""
    clean = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "DOTENV_PATH", "TMPDIR") if k in os.environ}
    env = {
        **clean,
        "DJANGO_SETTINGS_MODULE": "core.settings",
        "DEBUG": "1",
        "DATABASE_URL": "sqlite:////tmp/billing-checks-test.sqlite3",
        "BILLING_CHARGE_RATE_LIMIT": "lots",
        "STRIPE_PUBLISHABLE_KEY": "sk_test_oops",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "billing.E007" in result.stderr and "BILLING_CHARGE_RATE_LIMIT" in result.stderr
    assert "billing.E004" in result.stderr and "STRIPE_PUBLISHABLE_KEY" in result.stderr


@pytest.mark.parametrize(
    ("timeout", "retries", "web", "fits"),
    [
        (8, 1, 30, True),  # the defaults: about 17 s against 30 s
        (20, 2, 30, False),  # the old defaults: about 61 s, the worker would be killed at 30 s
        (8, 1, 20, False),  # fits the call, not the 5 s margin
        (20, 2, 120, True),  # a longer worker timeout makes room
    ],
)
def test_stripe_timeouts_must_fit_inside_the_web_worker_timeout(settings, timeout, retries, web, fits):
    settings.STRIPE_TIMEOUT_SECONDS = timeout
    settings.STRIPE_MAX_NETWORK_RETRIES = retries
    settings.BILLING_WEB_TIMEOUT_SECONDS = web
    errors = [e for e in billing_errors() if e.id == "billing.E013"]
    assert (errors == []) == fits
    if not fits:
        assert "BILLING_WEB_TIMEOUT_SECONDS" in errors[0].msg and "STRIPE_TIMEOUT_SECONDS" in errors[0].msg


def test_the_procfile_and_the_settings_agree_on_the_worker_timeout(settings):
    """The Procfile's gunicorn --timeout is the value the check compares with (WEB_TIMEOUT)."""
    procfile = (ROOT / "Procfile").read_text()
    assert "--timeout ${WEB_TIMEOUT:-30}" in procfile
    assert settings.BILLING_WEB_TIMEOUT_SECONDS == 30


@pytest.mark.parametrize(
    "tasks",
    [{"other": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}, {"default": {"BACKEND": "nowhere.X"}}],
)
def test_tasks_without_a_loadable_default_backend_is_billing_e015(settings, tasks):
    from billing.checks import check_task_backend  # django-tasks' own check stops at a backend it cannot load

    settings.TASKS = tasks
    assert [error.id for error in check_task_backend()] == ["billing.E015"]


def test_no_tasks_setting_is_django_tasks_default_and_passes(settings):
    del settings.TASKS
    assert "billing.E015" not in ids()


def test_no_site_url_is_fine_when_no_receipts_are_emailed(settings):
    settings.BILLING_SITE_URL = ""
    settings.BILLING_RECEIPT_EMAILS = False
    assert billing_errors() == []
