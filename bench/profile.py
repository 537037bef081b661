"""`python -m bench.profile [--ops N]`: where one process's time goes in spend_credits and in
the hand-written baseline, with pyinstrument, on a fresh bench database (dropped afterwards).

This is how the ledger's BEGIN/COMMIT round trips were found (docs/BENCHMARKS.md, "Changes").
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=3000)
    args = parser.parse_args()

    from bench import database

    url = database.bench_database_url()
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    database.recreate(url)
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections
        from pyinstrument import Profiler

        from bench import ledger_throughput

        call_command("migrate", verbosity=0)
        targets = ledger_throughput.prepare().spread[:50]
        for name in ("app", "baseline"):
            op = ledger_throughput._OPS[name]("spend")
            for i in range(50):
                op(*targets[i % len(targets)])
            profiler = Profiler(interval=0.0002)
            began = time.perf_counter()
            profiler.start()
            for i in range(args.ops):
                op(*targets[i % len(targets)])
            profiler.stop()
            per_op = (time.perf_counter() - began) / args.ops * 1e6
            print(f"=== {name}: {per_op:.0f} µs per spend under the profiler")
            print(profiler.output_text(unicode=True, color=False))
        connections.close_all()
    finally:
        database.drop(url)


if __name__ == "__main__":
    main()
