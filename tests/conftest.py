"""Shared fixtures. Tests run on whatever DATABASE_URL names: SQLite by default, PostgreSQL in CI."""

import multiprocessing
import os

import dj_database_url
import pytest
from django.contrib.auth.models import Permission
from django.db import connection, connections
from django.utils import timezone

from accounts.models import User
from core import csp
from tests.seed import starter_pack


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.postgres` tests need PostgreSQL's concurrency and triggers; on SQLite they
    skip with that reason. CI runs on PostgreSQL, where none of them skip."""
    url = os.environ.get("DATABASE_URL", "")
    on_postgres = bool(url) and dj_database_url.parse(url)["ENGINE"].endswith("postgresql")
    if on_postgres:
        return
    skip = pytest.mark.skip(
        reason="needs PostgreSQL (row locks across processes, triggers); set DATABASE_URL to run it"
    )
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def make_user(db):
    counter = iter(range(1, 1_000_000))

    def make(email=None, *, password="correct horse battery staple", **extra):
        email = email or f"user{next(counter)}@example.com"
        return User.objects.create_user(email=email, password=password, **extra)

    return make


@pytest.fixture
def make_staff(make_user):
    """`make_staff(email, *codenames)`: a staff user (not a superuser) holding exactly these billing
    permissions; "view_*" stands for every billing permission whose codename starts "view_"."""

    def make(email, *codenames):
        staff = make_user(email, is_staff=True)
        billing = Permission.objects.filter(content_type__app_label="billing")
        exact = [name for name in codenames if not name.endswith("*")]
        granted = list(billing.filter(codename__in=exact))
        missing = set(exact) - {permission.codename for permission in granted}
        assert not missing, f"billing has no permission {sorted(missing)}"
        for pattern in (name for name in codenames if name.endswith("*")):
            granted += billing.filter(codename__startswith=pattern[:-1])
        staff.user_permissions.add(*granted)
        return staff

    return make


@pytest.fixture
def user(make_user):
    return make_user("alice@example.com")


@pytest.fixture
def other_user(make_user):
    return make_user("bob@example.com")


@pytest.fixture
def signed_in_client(client, user):
    client.force_login(user)
    return client


def run_in_processes(target, args_list, *, timeout=120):
    """Run `target(*args)` in separate OS processes (forked, each with its own database
    connection) and return their results in order. For tests that need real concurrency."""
    connections.close_all()  # children must not share the parent's socket
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(len(args_list)) as pool:
        pending = [pool.apply_async(_in_child, (target, args)) for args in args_list]
        return [p.get(timeout=timeout) for p in pending]


def _in_child(target, args):
    connections.close_all()
    try:
        return target(*args)
    finally:
        connections.close_all()


def corrupt_balance(user, credits):
    """Bypass the ledger, as a bug or a hand-edit in psql would."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_profile SET credits = %s WHERE user_id = %s", [credits, user.pk])


def insert_raw_entry(user, *, delta, balance_after):
    """Append a ledger row by hand (inserts are allowed even where updates are not); 'grant' is
    the stored value of LedgerEntry.Kind.BONUS."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO billing_ledgerentry (profile_id, delta, balance_after, kind, reason, created_at)"
            " VALUES (%s, %s, %s, 'grant', 'hand-written', %s)",
            [user.profile.pk, delta, balance_after, timezone.now()],
        )


@pytest.fixture(scope="session")
def localstripe_server():
    """A live localstripe for the whole test session: loopback, free port, empty state."""
    from scripts import localstripe_server

    proc, base = localstripe_server.start()
    try:
        yield base
    finally:
        localstripe_server.stop(proc)


@pytest.fixture
def localstripe(localstripe_server, settings):
    """Point the app's Stripe client at the live localstripe for this test."""
    settings.STRIPE_API_BASE = localstripe_server
    settings.STRIPE_JS_URL = f"{localstripe_server}/js.stripe.com/v3/"
    settings.SECURE_CSP = csp.directives(settings.STRIPE_JS_URL, settings.STRIPE_API_BASE)
    return localstripe_server


def _transactional(request) -> bool:
    """Whether the test runs on a committed database that a flush empties afterwards."""
    marker = request.node.get_closest_marker("django_db")
    return (
        "transactional_db" in request.fixturenames
        or "live_server" in request.fixturenames
        or (marker is not None and marker.kwargs.get("transaction", False))
    )


@pytest.fixture(autouse=True)
def _seed_data_survives_flushes(request):
    """Transactional tests end with a flush that also removes what data migrations created (the
    `starter` pack). Put it back for every test that runs on a flushed, committed database."""
    if _transactional(request):
        request.getfixturevalue("transactional_db")
        starter_pack()


@pytest.fixture(autouse=True)
def _shared_cache_cleared_after_flushes(request):
    """The shared cache (login throttling counts) is a database table that no model owns, so the
    flush ending a transactional test leaves it alone: clear it then, as the rollback of every
    other test does. (Requested first, so the database is still open when this clears it.)"""
    transactional = _transactional(request)
    if transactional:
        request.getfixturevalue("transactional_db")
    yield
    if transactional:
        from django.core.cache import cache

        cache.clear()
