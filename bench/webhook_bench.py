"""The webhook endpoint through gunicorn (4 sync workers) against a trivial view on the same server,
with 2 task workers (`manage.py db_worker`, the Procfile's `worker` line) running throughout.

- new:       signed `payment_intent.succeeded` events, each for its own pending Payment: the
             endpoint stores each one and acknowledges it (BILLING_WEBHOOKS_ASYNC, on with the
             database task backend); the workers lock and fulfil the payments and credit the ledger.
- credited:  the same new events end to end: events / seconds from the first send to the last
             of their ledger entries (every payment credited, checked, within a deadline).
- duplicate: the same events sent again once credited: answered 200 from the store's one statement,
             which finds them stored and writes nothing.
- trivial:   POST /bench/trivial/ (bench.urls), same body and headers, same middleware: the
             cost of a request that does nothing, on the same server with the same client.

Events are built the way Stripe documents them and signed with the webhook secret exactly as
Stripe signs (testbed/signing.py), just before each run so their timestamps are fresh (Stripe's
tolerance is 300 s).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import http_load, servers
from bench.stats import Figure, percentile
from billing.stripe_gateway import STRIPE_API_VERSION
from testbed.signing import stripe_signature


@dataclass
class Plan:
    runs: int
    events: int  # per run, new; the same number of duplicates and trivial requests
    processes: int = 2
    threads: int = 4


FULL = Plan(runs=5, events=1000)
SMOKE = Plan(runs=2, events=40)

KINDS = ("new", "duplicate", "trivial")
WORKERS = int(os.environ.get("BENCH_WEBHOOK_WORKERS", "2"))
CREDIT_DEADLINE = 300.0  # seconds for every new event of a run to be credited


def make_payments(count: int, run_index: int) -> list[dict]:
    """Pending payments for bench users, as the charge endpoint leaves them before Stripe answers."""
    from accounts.models import User
    from billing.models import CreditPack, Payment

    pack = CreditPack.objects.get(slug="starter")
    users = list(User.objects.filter(email__startswith="webhook").order_by("pk")[:200])
    payments = Payment.objects.bulk_create(
        Payment(
            user=users[i % len(users)],
            pack=pack,
            credits=pack.credits,
            amount=pack.amount,
            currency=pack.currency,
            status=Payment.Status.PENDING,
            stripe_payment_intent_id=f"pi_bench_{run_index}_{i}",
        )
        for i in range(count)
    )
    return [
        {"payment": p.pk, "user": p.user_id, "intent": p.stripe_payment_intent_id, "amount": p.amount} for p in payments
    ]


def event_body(payment: dict, run_index: int) -> bytes:
    now = int(time.time())
    event = {
        "id": f"evt_bench_{run_index}_{payment['payment']}",
        "object": "event",
        "api_version": STRIPE_API_VERSION,
        "created": now,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": payment["intent"],
                "object": "payment_intent",
                "amount": payment["amount"],
                "amount_received": payment["amount"],
                "currency": "usd",
                "status": "succeeded",
                "payment_method_types": ["card"],
                "metadata": {"payment_id": str(payment["payment"]), "user_id": str(payment["user"]), "pack": "starter"},
                "created": now,
                "livemode": False,
            }
        },
    }
    return json.dumps(event).encode()


def run(plan: Plan, base_url: str, log, *, log_dir: Path, stripe_base: str) -> dict:
    # The workers talk to the same Stripe as the site (receipts ask it for the card).
    with servers.db_workers(log_dir, count=WORKERS, extra_env={"STRIPE_API_BASE": stripe_base}):
        return _run(plan, base_url, log)


def _run(plan: Plan, base_url: str, log) -> dict:
    from django.conf import settings

    from bench.fill import fill

    fill(users=200, entries_per_user=0, prefix="webhook")
    secret = settings.STRIPE_WEBHOOK_SECRET
    throughput = {k: Figure(f"webhook {k}", "req/s") for k in KINDS}
    p50 = {k: Figure(f"webhook {k} p50", "ms") for k in KINDS}
    p99 = {k: Figure(f"webhook {k} p99", "ms") for k in KINDS}
    ratios = {k: Figure(f"webhook {k}/trivial", "x") for k in ("new", "duplicate", "credited")}
    credited_rate = Figure("webhook credited end to end", "events/s")
    for run_index in range(plan.runs):
        payments = make_payments(plan.events, run_index)
        bodies = [event_body(p, run_index) for p in payments]
        measured = {}
        # The trivial view goes first in even runs and last in odd ones; duplicates need the new events first.
        order = ("trivial", "new", "duplicate") if run_index % 2 == 0 else ("new", "duplicate", "trivial")
        for kind in order:
            path = "/bench/trivial/" if kind == "trivial" else "/billing/webhook/"
            requests = [
                http_load.Request(
                    "POST",
                    path,
                    body,
                    {"Content-Type": "application/json", "Stripe-Signature": stripe_signature(body, secret)},
                )
                for body in bodies
            ]
            started = datetime.now(UTC)
            result = http_load.run(base_url, requests, processes=plan.processes, threads=plan.threads)
            if set(result.statuses) != {200}:
                raise RuntimeError(f"webhook bench {kind}: unexpected answers {result.statuses}")
            measured[kind] = result.throughput
            throughput[kind].add(result.throughput)
            p50[kind].add(percentile(result.latencies, 50) * 1000)
            p99[kind].add(percentile(result.latencies, 99) * 1000)
            if kind == "new":
                seconds = _wait_until_credited(run_index, plan.events) - started
                measured["credited"] = plan.events / seconds.total_seconds()
                credited_rate.add(measured["credited"])
        for kind in ("new", "duplicate", "credited"):
            ratios[kind].add(measured[kind] / measured["trivial"])
        log(
            f"webhook run {run_index + 1}/{plan.runs}: "
            + ", ".join(f"{k} {measured[k]:,.0f} req/s p50 {p50[k].runs[-1]:.1f} ms" for k in KINDS)
            + f", credited end to end {measured['credited']:,.0f} events/s"
        )
    return {"throughput": throughput, "p50": p50, "p99": p99, "ratios": ratios, "credited": credited_rate}


def _wait_until_credited(run_index: int, count: int) -> datetime:
    """Poll until every payment of the run is credited (deadline: CREDIT_DEADLINE); returns when
    the last of their purchase entries was written."""
    from django.db.models import Max

    from billing.models import LedgerEntry, Payment

    payments = Payment.objects.filter(stripe_payment_intent_id__startswith=f"pi_bench_{run_index}_")
    deadline = time.monotonic() + CREDIT_DEADLINE
    while (credited := payments.filter(status=Payment.Status.SUCCEEDED).count()) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"webhook bench: {credited} of {count} payments credited after {CREDIT_DEADLINE:.0f} s")
        time.sleep(0.02)
    entries = LedgerEntry.objects.filter(payment__in=payments, kind=LedgerEntry.Kind.PURCHASE)
    if entries.count() != count:
        raise RuntimeError(f"webhook bench: {entries.count()} purchase entries for {count} payments")
    return entries.aggregate(last=Max("created_at"))["last"]
