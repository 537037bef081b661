"""`python -m bench.charge_profile [--charges N] [--stripe-port P]`: what one POST /billing/charge/
costs on our side, in process: every SQL statement it sends (and which of them commit), and
where the Python time goes, with pyinstrument, through Django's full middleware stack (the test
client) against a loopback localstripe, on a fresh bench database (dropped afterwards).

The charge bench (bench/charge_bench.py) measures the same request through gunicorn; this is
how its overhead was taken apart (bench/NOTES.md, "Charge overhead").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BODY = '{"pack": "starter", "payment_method": "pm_card_visa"}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charges", type=int, default=300)
    parser.add_argument("--stripe-port", type=int, default=0, help="localstripe's port (default: a free one)")
    args = parser.parse_args()

    from bench import database, servers

    url = database.bench_database_url()
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    database.recreate(url)
    port = args.stripe_port or servers.free_port()
    stripe_base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stripe = subprocess.Popen(  # noqa: S603 - our own launcher
        [sys.executable, "-m", "bench.localstripe_server", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        servers._wait_until_up(stripe, f"{stripe_base}/js.stripe.com/v3/", 30, Path("/dev/null"))
        _profile(args.charges, stripe_base)
    finally:
        servers._stop(stripe)
        from django.db import connections

        connections.close_all()
        database.drop(url)


def _profile(charges: int, stripe_base: str) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext
    from pyinstrument import Profiler

    from accounts.models import User

    call_command("migrate", verbosity=0)
    users = [User.objects.create_user(email=f"profile{n}@example.com") for n in range(charges + 20)]
    clients = []
    for user in users:
        client = Client(enforce_csrf_checks=False)
        client.force_login(user)
        clients.append(client)

    def charge(client) -> None:
        response = client.post("/billing/charge/", BODY, content_type="application/json")
        if response.status_code != 200 or response.json().get("status") != "succeeded":
            raise RuntimeError(f"charge answered {response.status_code}: {response.content[:200]!r}")

    with override_settings(STRIPE_API_BASE=stripe_base, BILLING_CHARGE_RATE_LIMIT="10/60"):
        for client in clients[:10]:  # warm: connections, prepared statements, the SDK's pool
            charge(client)
        with CaptureQueriesContext(connection) as queries:
            charge(clients[10])
        print(f"=== one charge: {len(queries)} SQL statements")
        for n, query in enumerate(queries, 1):
            print(f"{n:3}. {' '.join(query['sql'].split())[:160]}")
        half = 20 + charges // 2
        profiler = Profiler(interval=0.0002)
        began = time.perf_counter()
        profiler.start()
        for client in clients[20:half]:
            charge(client)
        profiler.stop()
        print(f"=== {(time.perf_counter() - began) / (half - 20) * 1000:.2f} ms per charge under the profiler (wall)")
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        _cpu_by_phase(charge, clients[half:])


# Our process's CPU time per phase (cProfile on the thread's CPU clock, so time spent waiting for
# PostgreSQL or localstripe, and for the CPU on a loaded machine, is left out): what Python costs.
PHASES = (
    ("the request through Django (handler, middleware)", "django/core/handlers/base.py", "get_response"),
    ("session read", "sessions/backends/db.py", "load"),
    ("the user (auth)", "contrib/auth/__init__.py", "get_user"),
    ("rate limit count", "billing/ratelimit.py", "hit"),
    ("the view, in all", "billing/views.py", "charge"),
    ("pack read", "billing/charges.py", "_pack_for_sale"),
    ("Payment insert", "billing/charges.py", "_record"),
    ("Stripe call (SDK: request, parse)", "billing/stripe_gateway.py", "create_payment_intent"),
    ("credit + payment succeeded", "billing/fulfilment.py", "fulfil_payment"),
    ("JSON answer", "billing/http.py", "charge_response"),
)


def _cpu_by_phase(charge, clients) -> None:
    import cProfile
    import pstats

    profile = cProfile.Profile(time.thread_time)
    profile.enable()
    for client in clients:
        charge(client)
    profile.disable()
    stats = pstats.Stats(profile).stats
    print(f"=== CPU per charge by phase (cProfile, thread CPU clock, {len(clients)} charges; inflated by the profiler)")
    for label, path, name in PHASES:
        cumulative = sum(
            row[3] for (filename, _line, function), row in stats.items() if filename.endswith(path) and function == name
        )
        print(f"{label:45} {cumulative / len(clients) * 1000:7.2f} ms")


if __name__ == "__main__":
    main()
