"""Pages and commands with a small ledger and with a million entries.

The data is set-based (bench.fill): first 100 users x 100 entries (10,000 rows, the "small"
ledger), measured; then 9,900 more users x 100 entries, making 10,000 users and 1,000,000
entries, measured again. The user whose pages are timed has the same 100 entries in both, so
any growth comes from the size of the tables, which is what must not show.

Pages are served in process by Django's test client under bench.settings (DEBUG off, the
site's middleware), so a figure is the server's time for the request without network noise;
each page also reports how many SQL queries it made. Commands run through call_command.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

from bench.stats import Figure

SMALL_USERS = 100
ENTRIES_PER_USER = 100


@dataclass
class Plan:
    runs: int
    requests: int  # per page per run
    big_users: int  # total users in the big ledger


FULL = Plan(runs=5, requests=10, big_users=10_000)
SMOKE = Plan(runs=2, requests=3, big_users=300)

PAGES = [
    ("/billing/", "user"),
    ("/api/current_user", "user"),
    ("/admin/billing/ledgerentry/", "staff"),
    ("/admin/billing/ledgerentry/?kind__exact=spend", "staff"),
    ("/admin/billing/ledgerentry/?kind__exact=refund", "staff"),
    ("/admin/billing/ledgerentry/?q=scale7%40example.com", "staff"),
    ("/admin/billing/profile/", "staff"),
    ("/admin/billing/profile/?q=scale7%40example.com", "staff"),
    ("/admin/billing/profile/{profile}/change/", "staff"),
]


def _time_page(client, path: str, requests: int) -> tuple[float, int]:
    """Median milliseconds over `requests` GETs (after two warm-ups), and the query count."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):
        response = client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}")
    with CaptureQueriesContext(connection) as queries:
        client.get(path)
    count = len(queries)  # now: the next request clears the connection's query log
    samples = []
    for _ in range(requests):
        began = time.perf_counter()
        client.get(path)
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return samples[len(samples) // 2], count


def _time_command(*args) -> float:
    from django.core.management import call_command

    began = time.perf_counter()
    call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())
    return (time.perf_counter() - began) * 1000


def _scan_ms() -> float:
    """The floor for any whole-ledger check: one pass over every row, summing the deltas."""
    from django.db import connection

    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), sum(delta) FROM billing_ledgerentry")
        cursor.fetchone()
    return (time.perf_counter() - began) * 1000


def _measure(plan: Plan, label: str, results: dict, log) -> None:
    from django.test import Client

    from accounts.models import User
    from billing.models import LedgerEntry

    user = User.objects.get(email="scale7@example.com")
    staff = User.objects.get(email="bench-admin@example.com")
    clients = {"user": Client(), "staff": Client()}
    clients["user"].force_login(user)
    clients["staff"].force_login(staff)
    rows = LedgerEntry.objects.count()
    results.setdefault("sizes", {})[label] = {"ledger entries": rows, "users": User.objects.count()}
    for path, who in PAGES:
        path = path.format(profile=user.profile.pk)
        for _ in range(plan.runs):
            ms, queries = _time_page(clients[who], path, plan.requests)
            results["pages"].setdefault((path, label), Figure(f"GET {path} ({label})", "ms")).add(ms)
            results["queries"][(path, label)] = queries
        log(f"scale {label}: GET {path} {results['pages'][(path, label)].median:.1f} ms, {queries} queries")
    for _ in range(plan.runs):
        for name, args in (
            ("audit_credits", ("audit_credits",)),
            ("show_credits", ("show_credits", "scale7@example.com")),
        ):
            results["commands"].setdefault((name, label), Figure(f"{name} ({label})", "ms")).add(_time_command(*args))
        results["commands"].setdefault(("ledger scan", label), Figure(f"ledger scan ({label})", "ms")).add(_scan_ms())
    for name in ("audit_credits", "show_credits", "ledger scan"):
        log(f"scale {label}: {name} {results['commands'][(name, label)].median:.1f} ms")


def run(plan: Plan, log) -> dict:
    from accounts.models import User
    from bench.fill import fill

    results: dict = {"pages": {}, "queries": {}, "commands": {}, "fill": {}}
    User.objects.create_superuser("bench-admin@example.com", "bench-admin-password")
    began = time.perf_counter()
    fill(users=SMALL_USERS, entries_per_user=ENTRIES_PER_USER, prefix="scale")
    results["fill"]["small"] = time.perf_counter() - began
    _measure(plan, "small", results, log)
    began = time.perf_counter()
    filled = fill(users=plan.big_users - SMALL_USERS, entries_per_user=ENTRIES_PER_USER, prefix="scalebig")
    results["fill"]["big"] = time.perf_counter() - began
    results["fill"]["big_entries"] = filled.entries
    results["fill"]["big_insert"] = filled.insert_seconds
    log(
        f"scale: generated {filled.entries:,} entries in {filled.insert_seconds:.1f} s "
        f"(+{results['fill']['big'] - filled.insert_seconds:.1f} s VACUUM ANALYZE)"
    )
    _measure(plan, "big", results, log)
    return results
