"""Settings from the environment: production refuses to start without its secrets and passes
Django's deployment checks. Each case runs manage.py in a fresh process with a clean env."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "x" * 30 + "-production-like-secret-key-of-length-64-abcdefghijklmn",
    "ALLOWED_HOSTS": "credits.example.com",
    "BILLING_SITE_URL": "https://credits.example.com",
    "STRIPE_SECRET_KEY": "sk_test_prod_like",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_prod_like",
    "STRIPE_WEBHOOK_SECRET": "whsec_prod_like",
    "DATABASE_URL": "sqlite:////tmp/credits-settings-test.sqlite3",
}


def manage(*args, env):
    # Only what a shell needs: none of the test run's own settings leak in.
    clean = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "DOTENV_PATH", "TMPDIR") if k in os.environ}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "core.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "missing", ["SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET", "ALLOWED_HOSTS"]
)
def test_production_refuses_to_start_without_a_secret_and_names_it(missing):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert f"{missing} must be set" in result.stderr


def test_debug_runs_on_embedded_defaults():
    result = manage("check", env={"DEBUG": "1", "DATABASE_URL": PRODUCTION["DATABASE_URL"]})
    assert result.returncode == 0, result.stderr


def test_bad_boolean_is_an_error_not_a_guess():
    result = manage("check", env={**PRODUCTION, "DEBUG": "maybe"})
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr
