"""`python -m bench [--smoke]`: run every benchmark and write the report.

The full run (`make bench`) writes docs/BENCHMARKS.md and docs/bench-ledger-throughput.svg; the
smoke run (`make bench-smoke`, seconds, in CI) runs every part with tiny counts and writes to
bench/results/smoke/ so it never overwrites the published figures. Both create the database
named by BENCH_DATABASE_URL afresh (default: DATABASE_URL's server, database `<name>_bench`),
start gunicorn and localstripe on 127.0.0.1, stop them, and drop the database at the end.
A part that fails is reported and makes the exit status non-zero; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("scale", "ledger", "webhook", "charge")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts: checks the harness works, in seconds")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts ({', '.join(PARTS)})")
    parser.add_argument(
        "--out", type=Path, help="the Markdown report (default: docs/BENCHMARKS.md, smoke: bench/results/smoke/)"
    )
    parser.add_argument("--keep-db", action="store_true", help="leave the bench database for inspection")
    parser.add_argument("--max-minutes", type=float, help="abort after this long (default 60, smoke 5)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    out = args.out or (ROOT / "bench/results/smoke/BENCHMARKS.md" if args.smoke else ROOT / "docs/BENCHMARKS.md")
    results_dir = ROOT / "bench/results"
    results_dir.mkdir(parents=True, exist_ok=True)

    from bench import database

    url = database.bench_database_url()
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"

    max_seconds = 60 * (args.max_minutes or (5 if args.smoke else 60))
    signal.signal(signal.SIGALRM, _timed_out)
    signal.alarm(int(max_seconds))

    def log(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    started = time.time()
    pg_version = database.recreate(url)
    log(f"fresh database {url.rsplit('/', 1)[-1]} on PostgreSQL {pg_version}")
    try:
        import django

        django.setup()
        from django.core.management import call_command

        from testbed import machine

        call_command("migrate", verbosity=0)
        report = {
            "smoke": args.smoke,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
            "machine": machine.describe(pg_version),
            "parts": {},
            "errors": {},
        }
        _run_parts(parts, args.smoke, report, results_dir, log)
        report["seconds"] = time.time() - started
        report["load_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    finally:
        signal.alarm(0)
        if not args.keep_db:
            from django.db import connections

            connections.close_all()
            database.drop(url)

    from bench import report as report_writer

    written = report_writer.write(report, out)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    (results_dir / f"{'smoke' if args.smoke else 'full'}-{stamp}.json").write_text(
        json.dumps(report_writer.to_json(report), indent=2, default=str)
    )
    for path in written:
        log(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    for part, error in report["errors"].items():
        log(f"FAILED {part}: {error.splitlines()[-1]}")
    missed = report_writer.missed_targets(report)
    for line in missed:
        log(f"target missed: {line}")
    log(f"done in {report['seconds']:.0f} s")
    return 1 if report["errors"] else 0


def _run_parts(parts, smoke: bool, report: dict, results_dir: Path, log) -> None:
    from bench import charge_bench, ledger_throughput, scale_bench, servers, webhook_bench

    def attempt(name, fn):
        log(f"--- {name}")
        try:
            report["parts"][name] = fn()
        except Exception:  # noqa: BLE001 - recorded, reported, and the exit status says so
            report["errors"][name] = traceback.format_exc()
            log(f"{name} failed:\n{report['errors'][name]}")

    if "scale" in parts:
        attempt("scale", lambda: scale_bench.run(scale_bench.SMOKE if smoke else scale_bench.FULL, log))
    if "ledger" in parts:
        attempt(
            "ledger", lambda: ledger_throughput.run(ledger_throughput.SMOKE if smoke else ledger_throughput.FULL, log)
        )
    if "webhook" in parts or "charge" in parts:
        from django.db import connections

        connections.close_all()
        log_dir = results_dir / "logs"
        with (
            servers.localstripe(log_dir) as stripe_base,
            servers.gunicorn(log_dir, workers=4, extra_env={"STRIPE_API_BASE": stripe_base}) as base_url,
        ):
            log(f"gunicorn (4 workers) on {base_url}, localstripe on {stripe_base}")
            if "webhook" in parts:
                webhook_plan = webhook_bench.SMOKE if smoke else webhook_bench.FULL
                run_webhook = webhook_bench.run
                attempt(
                    "webhook",
                    lambda: run_webhook(webhook_plan, base_url, log, log_dir=log_dir, stripe_base=stripe_base),
                )
            if "charge" in parts:
                charge_plan = charge_bench.SMOKE if smoke else charge_bench.FULL
                attempt("charge", lambda: charge_bench.run(charge_plan, base_url, stripe_base, log))


class BenchTimeout(Exception):
    pass


def _timed_out(signum, frame):
    raise BenchTimeout("the bench ran past --max-minutes; servers are being stopped")


if __name__ == "__main__":
    sys.exit(main())
