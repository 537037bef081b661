"""The admin's changelist count on big tables (billing/admin/paginator.py): exact on SQLite and
on small tables; on a PostgreSQL table its statistics call large, the planner's estimate ("about
N") when many rows match, an exact count when few do, and the estimate again when that count
runs past its timeout, leaving the connection as it found it. "Large" is lowered here so a few
hundred rows stand for millions."""

from http import HTTPStatus

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.admin.paginator import EstimatedCount, LargeTablePaginator
from billing.ledger import add_credits, spend_credits
from billing.models import LedgerEntry

pytestmark = pytest.mark.django_db
postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="planner estimates are PostgreSQL's")

ENTRIES_URL = reverse("admin:billing_ledgerentry_changelist")


@pytest.fixture
def superuser(make_user):
    return make_user("root@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def ledger_of(make_user):
    """`ledger_of(n)`: n purchases and one spend for one user, the table analysed."""

    def make(purchases):
        owner = make_user("owner@example.com")
        for n in range(purchases):
            add_credits(owner, 1, kind=LedgerEntry.Kind.PURCHASE, reason=f"purchase {n}")
        spend_credits(owner, 1, reason="one spend")
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE billing_ledgerentry")
        return owner

    return make


@pytest.fixture
def large_from_100(monkeypatch):
    monkeypatch.setattr(LargeTablePaginator, "large_table_rows", 100)
    monkeypatch.setattr(LargeTablePaginator, "estimate_above", 100)


def test_an_estimate_reads_as_one():
    assert [str(EstimatedCount(n)) for n in (9_201_055, 100_001, 12_345, 99)] == [
        "about 9,200,000",
        "about 100,000",
        "about 12,000",
        "about 99",
    ]


def count(queryset) -> int:
    return LargeTablePaginator(queryset, 50).count


def test_a_small_table_is_counted_exactly(client, superuser, ledger_of):
    ledger_of(3)
    assert type(count(LedgerEntry.objects.all())) is int
    assert count(LedgerEntry.objects.all()) == 4
    client.force_login(superuser)
    response = client.get(ENTRIES_URL)
    assert response.status_code == HTTPStatus.OK
    assert "4 ledger entries" in response.content.decode()


def test_sqlite_always_counts_exactly(large_from_100, ledger_of):
    if connection.vendor == "postgresql":
        pytest.skip("SQLite's path")
    ledger_of(150)
    assert type(count(LedgerEntry.objects.all())) is int
    assert count(LedgerEntry.objects.all()) == 151


@postgres_only
def test_many_matching_rows_of_a_large_table_show_the_estimate(client, superuser, large_from_100, ledger_of):
    ledger_of(300)
    counted = count(LedgerEntry.objects.all())
    assert isinstance(counted, EstimatedCount)
    assert 200 <= counted <= 400  # the planner's figure, close to the 301 rows
    assert str(counted) == f"about {round(int(counted), -1):,}"  # two significant figures
    client.force_login(superuser)
    response = client.get(ENTRIES_URL + "?kind__exact=purchase")
    assert response.status_code == HTTPStatus.OK
    page = response.content.decode()
    assert "about " in page and " ledger entries" in page
    assert len(response.context["cl"].result_list) == 50  # the page itself is exact


@postgres_only
def test_few_matching_rows_of_a_large_table_are_counted_exactly(client, superuser, large_from_100, ledger_of):
    ledger_of(300)
    spends = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.SPEND)
    assert type(count(spends)) is int
    assert count(spends) == 1
    client.force_login(superuser)
    response = client.get(ENTRIES_URL + "?kind__exact=spend")
    assert response.status_code == HTTPStatus.OK
    assert "1 ledger entry" in response.content.decode()


@postgres_only
def test_a_cheap_count_is_one_query(large_from_100, ledger_of):
    owner = ledger_of(300)
    found = LedgerEntry.objects.filter(profile__user_id=owner.pk, kind=LedgerEntry.Kind.SPEND)
    with CaptureQueriesContext(connection) as queries:
        assert count(found) == 1
    # The table's size, the plan, the count: no transaction or timeout around it.
    assert [q["sql"].split()[0] for q in queries] == ["SELECT", "EXPLAIN", "SELECT"]


@postgres_only
def test_a_count_past_its_timeout_gives_way_to_the_estimate(large_from_100, monkeypatch, ledger_of):
    ledger_of(300)
    monkeypatch.setattr(LargeTablePaginator, "estimate_above", 10**9)
    monkeypatch.setattr(LargeTablePaginator, "cheap_count_cost", 0)  # every count is "expensive"
    monkeypatch.setattr(LargeTablePaginator, "count_timeout_ms", 20)
    # 301 rows at a millisecond each: the count needs 300 ms, and is cancelled at 20.
    slow = LedgerEntry.objects.extra(where=["pg_sleep(0.001) IS NOT NULL"])
    counted = count(slow)
    assert isinstance(counted, EstimatedCount)
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"
    assert LedgerEntry.objects.count() == 301  # the connection (and the test's transaction) still works


@postgres_only
def test_the_timeout_is_put_back_after_an_exact_count(large_from_100, monkeypatch, ledger_of):
    ledger_of(300)
    monkeypatch.setattr(LargeTablePaginator, "cheap_count_cost", 0)
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = '7s'")
    try:
        assert count(LedgerEntry.objects.filter(kind=LedgerEntry.Kind.SPEND)) == 1
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone()[0] == "7s"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")
