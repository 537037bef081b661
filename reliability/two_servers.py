"""Scenario 2, two app servers and one database: two gunicorn instances (different ports,
several sync workers each) on the same PostgreSQL and the same localstripe, as when the site
outgrows one machine.

Signed-in users buy packs through both servers at once (each request to a random server): most
with a card that succeeds at once, some through 3-D Secure (charge on one server, the challenge
at localstripe, confirm on a random server), some declined. While that runs, a deliverer polls
localstripe's events and sends 5 copies of each payment_intent event, shuffled, to both servers
concurrently, so webhooks race the charge and confirm requests that settle the same payments.
The servers acknowledge the events; a task worker beside each (`manage.py db_worker`, as the
Procfile deploys it) credits them, and the checks wait (with a deadline) until none is left.

Pass: every request got an answer (no timeout, no reset, no 5xx); every payment Stripe says
succeeded is credited exactly once (one purchase entry, the pack's credits), none other is;
every balance is 5 x its succeeded payments and audit_credits is clean; each event is stored
once; both servers served traffic; no traceback and no secret in any server's or worker's log.

    python -m reliability.two_servers --size smoke|full
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reliability.harness import Size, has_command, log, manage, scenario_main, setup_django
from reliability.servers import (
    STRIPE_KEY,
    WEBHOOK_SECRET,
    AppServer,
    LocalStripe,
    TaskWorker,
    call,
    deliver,
    free_port,
    scan_logs,
    server_env,
    signed_in_browsers,
    wait_for_webhook_events,
)

VISA, THREE_D_SECURE, DECLINED = "4242424242424242", "4000002500003155", "4000000000000341"
COPIES = 5
# The servers' per-user charge limit: the default 10 per window, over an hour so that the burst
# below cannot straddle two windows; each buyer makes at most 5 payments.
RATE_LIMIT = (10, 3600)
BURST = 16
EVENT_TYPES = ("payment_intent.succeeded", "payment_intent.payment_failed")


def plan(size: Size) -> dict:
    return size.pick(
        smoke={"payments": 30, "users": 6, "workers": 2, "clients": 8},
        full={"payments": 200, "users": 40, "workers": 3, "clients": 12},
    )


class Tally:
    """Thread-safe counts of what every request got."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = Counter()
        self.unanswered = []
        self.per_server = Counter()
        self.slowest = 0.0

    def add(self, endpoint: str, server: str, answer) -> None:
        with self.lock:
            self.counts[(endpoint, answer.status)] += 1
            self.per_server[server] += 1
            self.slowest = max(self.slowest, answer.seconds)
            if answer.status is None or answer.status >= 500:
                self.unanswered.append((endpoint, server, answer.status, answer.error or str(answer.body)[:200]))


def run(size: Size) -> dict:
    sizes = plan(size)
    url = setup_django("rel_servers")
    from django.db import connection

    stripe = LocalStripe()
    logs = Path(tempfile.mkdtemp(prefix="rel_servers_"))
    env = server_env(url, stripe.base, BILLING_CHARGE_RATE_LIMIT=f"{RATE_LIMIT[0]}/{RATE_LIMIT[1]}")
    servers = [
        AppServer(name, free_port(), sizes["workers"], env, logs / f"{name}.log") for name in ("server-a", "server-b")
    ]
    # One task worker beside each server, as the Procfile deploys them: the servers acknowledge
    # webhook events, the workers credit them.
    task_workers = [TaskWorker(f"worker-{name[-1]}", env, logs / f"worker-{name[-1]}.log") for name in ("a", "b")]
    try:
        for process in (*servers, *task_workers):
            process.start()
        browsers = signed_in_browsers([f"buyer{i}@example.com" for i in range(sizes["users"])])
        hammer = signed_in_browsers(["card-tester@example.com"])[0]
        replayer = signed_in_browsers(["key-replayer@example.com"])[0]
        connection.close()
        result = _traffic(sizes, servers, stripe, browsers)
        result["rate_limit"] = _burst(servers, hammer)
        result["replayed_key"] = _replay_attack(servers, replayer)
        wait_for_webhook_events()
    finally:
        for process in (*servers, *task_workers):
            process.stop()
    result.update(_verify(stripe, browsers, result))
    stripe.stop()
    secrets_to_find = {
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SECRET_KEY": env["SECRET_KEY"],
    }
    result["logs"] = {p.name: scan_logs(p.log_text(), secrets_to_find) for p in (*servers, *task_workers)}
    verdicts = result["verdicts"]
    limit = result["rate_limit"]
    verdicts[f"one user's {BURST} charges at once across both servers: exactly {RATE_LIMIT[0]} let through"] = (
        limit["let_through"] == RATE_LIMIT[0] and limit["limited"] == BURST - RATE_LIMIT[0] and limit["other"] == 0
    )
    replay = result["replayed_key"]
    verdicts[f"one credit, one Idempotency-Key sent {REPLAYS} times at once to both servers: one paid action"] = (
        replay["spends"] == 1 and replay["balance"] == 0 and replay["same_answer"] and replay["fresh_key_refused"]
    )
    verdicts["both servers served traffic"] = all(result["requests_per_server"].get(s.name, 0) > 0 for s in servers)
    verdicts["no traceback and no secret in the servers' and workers' logs"] = all(
        not v["tracebacks"] and not v["secrets_found"] for v in result["logs"].values()
    )
    result["passed"] = all(verdicts.values())
    result["sizes"] = {
        "app servers": len(servers),
        "gunicorn workers each": sizes["workers"],
        "payments": sizes["payments"],
        "users": sizes["users"],
        "concurrent clients": sizes["clients"],
        "copies of each webhook event": COPIES,
        "charge limit per user": f"{RATE_LIMIT[0]} per {RATE_LIMIT[1]} s",
    }
    result["scenario"] = "Two app servers, one database"
    return result


def _traffic(sizes, servers, stripe: LocalStripe, browsers) -> dict:
    rng = random.Random(2)
    tally = Tally()
    kinds = ["visa"] * 7 + ["3ds"] * 2 + ["declined"]
    plans = [(i, rng.choice(kinds), browsers[i % len(browsers)]) for i in range(sizes["payments"])]
    outcomes = Counter()
    outcome_lock = threading.Lock()

    def pay(index, kind, browser):
        server = rng.choice(servers)
        number = {"visa": VISA, "3ds": THREE_D_SECURE, "declined": DECLINED}[kind]
        pm = stripe.card(number)
        answer = browser.post_json(f"{server.url}/billing/charge/", {"pack": "starter", "payment_method": pm})
        tally.add("charge", server.name, answer)
        status = answer.body.get("status") if isinstance(answer.body, dict) else None
        if kind == "3ds" and status == "requires_action":
            stripe.authenticate(answer.body["client_secret"])
            confirm_on = rng.choice(servers)
            confirmed = browser.post_json(f"{confirm_on.url}/billing/charge/{answer.body['payment']}/confirm/", {})
            tally.add("confirm", confirm_on.name, confirmed)
            status = confirmed.body.get("status") if isinstance(confirmed.body, dict) else confirmed.status
        with outcome_lock:
            outcomes[(kind, answer.status, status)] += 1

    sent_events = set()
    webhook_answers = Counter()
    done = threading.Event()

    def deliverer(pool):
        """Send 5 shuffled copies of every new payment_intent event, to both servers at once."""
        while True:
            finished = done.is_set()
            events = [e for e in stripe.list_all("events") if e["type"] in EVENT_TYPES and e["id"] not in sent_events]
            copies = []
            for event in events:
                sent_events.add(event["id"])
                copies.extend([event] * COPIES)
            rng_local = random.Random(len(sent_events))
            rng_local.shuffle(copies)
            futures = []
            for event in copies:
                server = rng_local.choice(servers)
                futures.append((server, pool.submit(deliver, server.url, event)))
            for server, future in futures:
                answer = future.result()
                tally.add("webhook", server.name, answer)
                body = answer.body if isinstance(answer.body, dict) else {}
                webhook_answers[(answer.status, body.get("status"), body.get("duplicate"))] += 1
            if finished:
                return
            time.sleep(0.2)

    started = time.monotonic()
    with ThreadPoolExecutor(sizes["clients"]) as payers, ThreadPoolExecutor(sizes["clients"]) as hooks:
        thread = threading.Thread(target=deliverer, args=(hooks,), daemon=True)
        thread.start()
        futures = [payers.submit(pay, *p) for p in plans]
        errors = []
        for future in futures:
            try:
                future.result(timeout=300)
            except Exception as exc:  # noqa: BLE001 - a client-side failure is reported, not hidden
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
        # Let localstripe's last events appear, then one final sweep.
        done.set()
        thread.join(timeout=300)
    wall = time.monotonic() - started
    log(f"traffic done in {wall:.1f} s: {sum(tally.counts.values())} requests")
    return {
        "wall_seconds": round(wall, 1),
        "requests": {f"{endpoint} {status}": n for (endpoint, status), n in sorted(tally.counts.items(), key=str)},
        "requests_total": sum(tally.counts.values()),
        "requests_per_server": dict(tally.per_server),
        "unanswered_or_5xx": tally.unanswered[:20],
        "unanswered_or_5xx_count": len(tally.unanswered),
        "slowest_answer_seconds": round(tally.slowest, 2),
        "payment_outcomes": {f"{k[0]} -> HTTP {k[1]}, {k[2]}": n for k, n in sorted(outcomes.items(), key=str)},
        "events_delivered": len(sent_events),
        "webhook_deliveries": sum(webhook_answers.values()),
        "webhook_answers": {
            f"HTTP {k[0]} {k[1]} duplicate={k[2]}": n for k, n in sorted(webhook_answers.items(), key=str)
        },
        "client_errors": errors[:10],
    }


REPLAYS = 12


def _replay_attack(servers, browser) -> dict:
    """A user with one credit sends the paid action REPLAYS times at once with one Idempotency-Key,
    alternating servers: the action runs once and every replay gets the first answer; a new key
    then finds the balance empty (402)."""
    from django.db import connection

    from accounts.models import User
    from billing import ledger
    from billing.models import LedgerEntry

    ledger.add_credits(User.objects.get(pk=browser.user_id), 1, kind="adjustment", reason="replay attack seed")

    def fortune(i: int, key: str):
        url = f"{servers[i % 2].url}/fortune/"
        return call(lambda: browser.http.post(url, headers={"Idempotency-Key": key}, allow_redirects=False))

    with ThreadPoolExecutor(REPLAYS) as pool:
        answers = list(pool.map(lambda i: fortune(i, "replayed-key-1"), range(REPLAYS)))
    fresh = fortune(0, "another-key")
    spends = LedgerEntry.objects.filter(profile__user_id=browser.user_id, kind=LedgerEntry.Kind.CAPTURE).count()
    balance = ledger.get_balance(User.objects.get(pk=browser.user_id))
    connection.close()
    return {
        "attempts": REPLAYS,
        "statuses": dict(Counter(a.status for a in answers)),
        "spends": spends,
        "balance": balance,
        "same_answer": {a.status for a in answers} == {302},
        "fresh_key_refused": fresh.status == 402,
    }


def _burst(servers, browser) -> dict:
    """One user fires BURST charge attempts at once, alternating servers: the limit is one
    budget in the shared database, so exactly the limit gets through, whichever server answers."""
    body = {"pack": "starter", "payment_method": "not-a-card"}  # refused before Stripe: 400 when let through
    with ThreadPoolExecutor(BURST) as pool:
        answers = list(
            pool.map(lambda i: browser.post_json(f"{servers[i % 2].url}/billing/charge/", body), range(BURST))
        )
    statuses = Counter(a.status for a in answers)
    limited = [a for a in answers if a.status == 429]
    return {
        "attempts": BURST,
        "let_through": statuses.get(400, 0),
        "limited": len(limited),
        "other": BURST - statuses.get(400, 0) - len(limited),
        "limited_answer": limited[0].body if limited else None,
    }


def _verify(stripe: LocalStripe, browsers, traffic: dict) -> dict:
    from django.db import connection
    from django.db.models import Count, Q

    from billing.models import LedgerEntry, Payment, Profile, StripeEvent

    connection.close()
    intents = {pi["id"]: pi for pi in stripe.list_all("payment_intents")}
    succeeded_at_stripe = {pid for pid, pi in intents.items() if pi["status"] == "succeeded"}
    payments = list(
        Payment.objects.annotate(purchases=Count("ledger_entries", filter=Q(ledger_entries__kind="purchase")))
    )
    credited = {p.stripe_payment_intent_id for p in payments if p.purchases}
    wrongly_counted = [p.pk for p in payments if p.purchases > 1]
    status_mismatch = [
        p.pk for p in payments if (p.status == "succeeded") != (p.stripe_payment_intent_id in succeeded_at_stripe)
    ]
    balances_wrong = []
    for profile in Profile.objects.filter(user_id__in=[b.user_id for b in browsers]):
        succeeded = Payment.objects.filter(user_id=profile.user_id, status="succeeded").count()
        if profile.credits != 5 * succeeded:
            balances_wrong.append((profile.user_id, profile.credits, succeeded))
    events_stored = StripeEvent.objects.count()
    events_by_status = dict(StripeEvent.objects.values_list("status").annotate(n=Count("id")))
    duplicate_events = StripeEvent.objects.values("event_id").annotate(n=Count("id")).filter(n__gt=1).count()
    audit = {"clean": None}
    if has_command("audit_credits"):
        result = manage("audit_credits")
        audit = {"clean": result.returncode == 0, "output": (result.stdout + result.stderr)[-500:]}
    purchases = LedgerEntry.objects.filter(kind="purchase").count()
    verdicts = {
        "every request got an answer, none 5xx": traffic["unanswered_or_5xx_count"] == 0
        and not traffic["client_errors"],
        "every payment Stripe says succeeded is credited exactly once": credited == succeeded_at_stripe
        and not wrongly_counted
        and purchases == len(succeeded_at_stripe),
        "no payment credited without Stripe's success; statuses agree": not status_mismatch,
        "every balance is 5 x its succeeded payments": not balances_wrong,
        "each webhook event stored once, none failed": duplicate_events == 0
        and events_stored == traffic["events_delivered"]
        and not events_by_status.get("failed"),
        "audit_credits clean": audit["clean"] is not False,
    }
    return {
        "payments": len(payments),
        "payments_by_status": dict(Counter(p.status for p in payments)),
        "intents_at_stripe": len(intents),
        "succeeded_at_stripe": len(succeeded_at_stripe),
        "purchase_entries": purchases,
        "credited_more_than_once": wrongly_counted,
        "status_mismatches": status_mismatch[:10],
        "balances_wrong": balances_wrong[:10],
        "events_stored": events_stored,
        "events_by_status": events_by_status,
        "audit_credits": audit,
        "verdicts": verdicts,
    }


if __name__ == "__main__":
    sys.exit(scenario_main(run))
