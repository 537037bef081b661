"""Pages and commands with a small ledger and with ten million entries.

The data is set-based (bench.fill): first 100 users x 100 entries (10,000 rows, the "small"
ledger), measured; then 99,900 more users x 100 entries, making 100,000 users and 10,000,000
entries, measured again. Every profile's credits sit in grants (an opening grant each spend draws
on, one per top-up), so `audit_credits` runs all its checks over consistent books and finds
nothing. The user whose pages are timed has the same 100 entries in both, so any growth comes
from the size of the tables, which is what must not show. Last, every one of the 100,000
profiles gets one promotional grant that has already expired, and `expire_credits` sweeps them
all (one `expiry` entry each); `audit_credits` then checks the books again.

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
    audit_runs: int  # audit_credits over the big ledger reads every row: fewer runs
    expire_runs: int  # each run sweeps one expired grant on every profile


FULL = Plan(runs=5, requests=10, big_users=100_000, audit_runs=3, expire_runs=3)
SMOKE = Plan(runs=2, requests=3, big_users=300, audit_runs=1, expire_runs=1)
EXPIRED_GRANT = 3  # credits in each expired grant the sweep meets

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
    ("/admin/billing/creditgrant/", "staff"),
    ("/admin/billing/payment/", "staff"),
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
    audit_runs = plan.runs if label == "small" else plan.audit_runs
    for run in range(plan.runs):
        commands = [("show_credits", ("show_credits", "scale7@example.com"))]
        if run < audit_runs:
            commands.insert(0, ("audit_credits", ("audit_credits",)))
        for name, args in commands:
            results["commands"].setdefault((name, label), Figure(f"{name} ({label})", "ms")).add(_time_command(*args))
        results["commands"].setdefault(("ledger scan", label), Figure(f"ledger scan ({label})", "ms")).add(_scan_ms())
    for name in ("audit_credits", "show_credits", "ledger scan"):
        log(f"scale {label}: {name} {results['commands'][(name, label)].median:.1f} ms")


def _measure_expiry(plan: Plan, results: dict, log) -> None:
    """expire_credits over one expired grant on each of the big ledger's profiles, then the audit."""
    from bench.fill import add_expired_grants
    from billing.ledger import expire_credits
    from billing.ledger.invariants import broken_profiles, grant_problems

    figure = Figure("expire_credits", "ms")
    for _ in range(plan.expire_runs):
        grants = add_expired_grants(prefix="scale", profiles=plan.big_users, amount=EXPIRED_GRANT)
        began = time.perf_counter()
        expired = expire_credits()
        figure.add((time.perf_counter() - began) * 1000)
        if expired != grants * EXPIRED_GRANT:
            raise RuntimeError(f"expire_credits expired {expired} credits of {grants} grants of {EXPIRED_GRANT}")
        log(f"scale: expire_credits swept {grants:,} grants in {figure.runs[-1] / 1000:.1f} s")
    results["expiry"] = {"grants": grants, "figure": figure}
    began = time.perf_counter()
    broken, problems = list(broken_profiles()), grant_problems()
    results["expiry"]["audit_ms"] = (time.perf_counter() - began) * 1000
    results["expiry"]["audit_clean"] = not broken and not problems
    if broken or problems:
        raise RuntimeError(f"the books disagree after the sweep: {broken[:3]} {problems[:3]}")
    log(f"scale: books sound after the sweeps (checked in {results['expiry']['audit_ms'] / 1000:.1f} s)")


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
    filled = fill(users=plan.big_users - SMALL_USERS, entries_per_user=ENTRIES_PER_USER, prefix="scalebig", log=log)
    results["fill"]["big"] = time.perf_counter() - began
    results["fill"]["big_entries"] = filled.entries
    results["fill"]["big_insert"] = filled.insert_seconds
    log(
        f"scale: generated {filled.entries:,} entries in {filled.insert_seconds:.1f} s "
        f"(+{results['fill']['big'] - filled.insert_seconds:.1f} s VACUUM ANALYZE)"
    )
    _measure(plan, "big", results, log)
    _measure_expiry(plan, results, log)
    return results
