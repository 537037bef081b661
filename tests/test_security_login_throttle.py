"""Login throttling: /admin/login/ goes through allauth's login, whose failed-login limit
(ACCOUNT_RATE_LIMITS["login_failed"]) refuses even the right password once an email has had too
many wrong ones; the counts live in a cache every worker and server shares (the database by
default, Redis when REDIS_URL is set)."""

import os
import sqlite3
import subprocess
import sys
import uuid
from http import HTTPStatus
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection

from tests.conftest import run_in_processes

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"  # make_user's default
STAFF_EMAIL = "staff@example.com"
LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
LOCKED_OUT = "Too many failed login attempts"
# ACCOUNT_RATE_LIMITS["login_failed"] allows 5 failures per email in 5 minutes.
ALLOWED_FAILURES = 5


@pytest.fixture
def staff(make_user):
    return make_user(STAFF_EMAIL, is_staff=True, is_superuser=True)


def sign_in(client, email, password, *, url=LOGIN):
    return client.post(url, {"login": email, "password": password})


def is_signed_in_to_admin(client) -> bool:
    return client.get("/admin/").status_code == HTTPStatus.OK


def test_the_admin_login_form_takes_no_password_any_more(client, staff):
    """Forty wrong passwords and then the right one, POSTed to Django's own admin login form:
    none is checked and nobody is signed in; every POST is sent to the throttled login."""
    for password in ["wrong password"] * 40 + [PASSWORD]:
        response = client.post(ADMIN_LOGIN, {"username": staff.email, "password": password, "next": "/admin/"})
        assert response.status_code == HTTPStatus.FOUND
        assert response["Location"].startswith(LOGIN)
    assert not is_signed_in_to_admin(client)


def test_the_admin_sends_staff_to_the_throttled_login_and_back(client, staff):
    response = client.get("/admin/", follow=True)
    login_url = response.redirect_chain[-1][0]
    assert login_url == f"{LOGIN}?next=%2Fadmin%2F"
    response = sign_in(client, staff.email, PASSWORD, url=login_url)
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == "/admin/"
    assert is_signed_in_to_admin(client)


def test_wrong_passwords_lock_the_admin_out_even_with_the_right_password(client, staff):
    login_url = client.get("/admin/", follow=True).redirect_chain[-1][0]
    for _ in range(ALLOWED_FAILURES):
        refused = sign_in(client, staff.email, "wrong password", url=login_url)
        assert refused.status_code == HTTPStatus.OK
        assert LOCKED_OUT not in refused.content.decode()
    locked = sign_in(client, staff.email, PASSWORD, url=login_url)
    assert locked.status_code == HTTPStatus.OK
    assert LOCKED_OUT in locked.content.decode()
    assert not is_signed_in_to_admin(client)


def test_the_sites_own_login_is_limited_per_email(client, make_user):
    user = make_user("carol@example.com")
    other = make_user("dave@example.com")
    for _ in range(ALLOWED_FAILURES):
        assert LOCKED_OUT not in sign_in(client, user.email, "wrong password").content.decode()
    locked = sign_in(client, user.email, PASSWORD)
    assert LOCKED_OUT in locked.content.decode()
    assert "_auth_user_id" not in client.session
    # Another person's email is not locked by these failures (and the failures count per email
    # across spellings of it: allauth lower-cases the login).
    assert LOCKED_OUT in sign_in(client, user.email.upper(), PASSWORD).content.decode()
    assert sign_in(client, other.email, PASSWORD).status_code == HTTPStatus.FOUND


def test_a_successful_login_does_not_use_up_the_budget(client, make_user):
    user = make_user("erin@example.com")
    for _ in range(ALLOWED_FAILURES + 3):
        assert sign_in(client, user.email, PASSWORD).status_code == HTTPStatus.FOUND
        client.logout()


def test_the_counts_are_kept_in_the_database_cache(client, staff):
    """The shared store is a database table (made by `migrate`), not process memory."""
    assert django_settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.db.DatabaseCache"
    table = django_settings.CACHES["default"]["LOCATION"]
    assert table in connection.introspection.table_names()
    sign_in(client, staff.email, "wrong password")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT cache_key FROM {connection.ops.quote_name(table)}")  # noqa: S608
        keys = [row[0] for row in cursor.fetchall()]
    assert any(":allauth:rl:allauth.account:login_failed:" in key for key in keys), keys


def _fail_logins(email, times):
    from django.test import Client

    client = Client()
    return [sign_in(client, email, "wrong password").status_code for _ in range(times)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_limit_is_shared_across_processes(client, make_user):
    """Failures counted in other processes (as other gunicorn workers or servers would) lock the
    email out here too."""
    user = make_user(STAFF_EMAIL, is_staff=True)
    statuses = run_in_processes(_fail_logins, [(user.email, 2), (user.email, 3)])
    assert statuses == [[HTTPStatus.OK] * 2, [HTTPStatus.OK] * 3]
    assert LOCKED_OUT in sign_in(client, user.email, PASSWORD).content.decode()
    assert not is_signed_in_to_admin(client)


def settings_in_a_fresh_process(code: str, **environ: str) -> str:
    """What `code` prints with the development settings read from `environ` in a new process."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "DOTENV_PATH") if k in os.environ}
    env |= {"DEBUG": "1", "DJANGO_SETTINGS_MODULE": "core.settings", **environ}
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout


def test_redis_url_selects_djangos_redis_cache():
    code = "from django.conf import settings; print(*(settings.CACHES['default'][k] for k in ('BACKEND', 'LOCATION')))"
    with_redis = settings_in_a_fresh_process(code, REDIS_URL="redis://127.0.0.1:6379/3")
    assert with_redis.split() == ["django.core.cache.backends.redis.RedisCache", "redis://127.0.0.1:6379/3"]
    without = settings_in_a_fresh_process(code)
    assert without.split() == ["django.core.cache.backends.db.DatabaseCache", "django_cache"]


def _redis_or_skip():
    redis = pytest.importorskip("redis")
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.skip(f"needs a Redis server at {url} (REDIS_URL): {error}")
    return url, client


def test_the_lockout_holds_on_redis(settings, client, staff):
    url, redis_client = _redis_or_skip()
    prefix = f"test-{uuid.uuid4().hex}"  # the server may be shared: touch only this test's keys
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url, "KEY_PREFIX": prefix}
    }
    try:
        for _ in range(ALLOWED_FAILURES):
            assert LOCKED_OUT not in sign_in(client, staff.email, "wrong password").content.decode()
        assert LOCKED_OUT in sign_in(client, staff.email, PASSWORD).content.decode()
        keys = [key.decode() for key in redis_client.scan_iter(f"{prefix}:*")]
        assert any(":allauth:rl:allauth.account:login_failed:" in key for key in keys), keys
    finally:
        for key in redis_client.scan_iter(f"{prefix}:*"):
            redis_client.delete(key)
        cache.close()


def test_trusted_proxy_count_comes_from_the_environment():
    code = "from django.conf import settings; print(settings.ALLAUTH_TRUSTED_PROXY_COUNT)"
    assert settings_in_a_fresh_process(code, TRUSTED_PROXY_COUNT="1").strip() == "1"


def test_with_mandatory_verification_staff_confirm_their_email_before_the_admin(settings, client, staff, mailoutbox):
    """Production verifies emails (ACCOUNT_EMAIL_VERIFICATION=mandatory), and staff now sign in
    through the site's login: a superuser made with createsuperuser confirms the address first."""
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    login_url = client.get("/admin/", follow=True).redirect_chain[-1][0]
    response = sign_in(client, staff.email, PASSWORD, url=login_url)
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == "/accounts/confirm-email/"
    assert [message.to for message in mailoutbox] == [[staff.email]]
    assert not is_signed_in_to_admin(client)


def test_migrate_alone_makes_the_cache_table_so_a_deploy_cannot_forget_it(tmp_path):
    """A fresh database after `manage.py migrate` and nothing else (what most platforms run)
    already has the cache table: without it every sign-in would fail on the throttle's cache."""
    database = tmp_path / "fresh.sqlite3"
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{database}",
        "DJANGO_SETTINGS_MODULE": "core.settings",
    }
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert django_settings.CACHES["default"]["LOCATION"] in tables
