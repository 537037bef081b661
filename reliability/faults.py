"""Scenario 3, faults: what a buyer sees, and what the books say, when things break mid-payment.

A gunicorn app server (production settings, one sync worker so the worker to kill is known)
talks to Stripe through a fault-injecting proxy in front of localstripe (testbed/faultproxy.py);
a second one talks to a port where nothing listens. Each fault, for a fresh user:

1. Stripe unreachable (connection refused);
2. Stripe answering 500 to everything;
3. Stripe slower than the client's timeout, after it has accepted the charge (the answer is lost);
4. the database connection killed (pg_terminate_backend) while the request waits on Stripe,
   after Stripe accepted the charge, so recording the outcome meets a dead connection;
5. the worker killed (SIGKILL) after Stripe accepted the charge, before our commit.

Each must end with: an answer the page can show (JSON with a clear message; for the killed
worker, no answer, which the page turns into its own "could not reach the server" message);
no partial state (no ledger entry, the payment not credited, audit_credits clean); then, with
Stripe back, reconcile_payments or the webhook restoring the right balance exactly once (a
second run and a duplicate event change nothing); and the site answering normally afterwards.

    python -m reliability.faults --size smoke|full
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from reliability.harness import (
    Size,
    admin_connection,
    has_command,
    log,
    manage,
    scenario_main,
    setup_django,
    wait_until,
)
from reliability.servers import (
    AppServer,
    LocalStripe,
    TaskWorker,
    deliver,
    free_port,
    procfile_timeout,
    scan_logs,
    server_env,
    signed_in_browsers,
    wait_for_webhook_events,
)
from testbed.faultproxy import FaultyStripe

STRIPE_TIMEOUT = 4  # seconds: the app servers' Stripe read timeout in this scenario
FAULTS = ("unreachable", "error500", "slow", "db_killed", "worker_killed", "never_answers")


def plan(size: Size) -> dict:
    return size.pick(smoke={"rounds": 1}, full={"rounds": 3})


class Lab:
    """The servers, Stripe, the proxy and the database of the scenario."""

    def __init__(self, url: str):
        self.url = url
        self.stripe = LocalStripe()
        self.proxy = FaultyStripe(self.stripe.base)
        logs = Path(tempfile.mkdtemp(prefix="rel_faults_"))
        timeout = {"STRIPE_TIMEOUT_SECONDS": str(STRIPE_TIMEOUT)}
        self.env = server_env(url, self.proxy.base, **timeout)
        self.faulty = AppServer("faulty-stripe", free_port(), 1, self.env, logs / "faulty.log")
        cut_env = server_env(url, f"http://127.0.0.1:{free_port()}", **timeout)  # nothing listens there
        self.cut_off = AppServer("no-stripe", free_port(), 1, cut_env, logs / "cut-off.log")
        # As deployed: the Procfile's worker timeout and the production Stripe client (its
        # default timeout and retries), in front of a Stripe that takes the charge and never answers.
        self.worker_timeout = procfile_timeout()
        production_env = server_env(url, self.proxy.base, RELIABILITY_STRIPE_CLIENT="production")
        self.as_deployed = AppServer(
            "as-deployed", free_port(), 1, production_env, logs / "as-deployed.log", timeout=self.worker_timeout
        )
        # What reconcile_payments runs with once Stripe is back: the real (local) Stripe.
        self.back_env = server_env(url, self.stripe.base)
        # Processes the webhook events the servers acknowledge, as the Procfile's worker does.
        self.task_worker = TaskWorker("task-worker", self.back_env, logs / "task-worker.log")
        self.users = 0

    def start(self):
        self.faulty.start()
        self.cut_off.start()
        self.as_deployed.start()
        self.task_worker.start()

    def stop(self):
        for server in (self.faulty, self.cut_off, self.as_deployed, self.task_worker):
            server.stop()
        self.proxy.stop()
        self.stripe.stop()

    def new_browser(self, label: str):
        from django.db import connection

        self.users += 1
        browser = signed_in_browsers([f"{label}{self.users}@example.com"])[0]
        connection.close()
        return browser


# --- what the books say ---------------------------------------------------------------------------


def books(user_id: int) -> dict:
    from django.db import connection

    from billing.models import LedgerEntry, Payment, Profile

    connection.close()  # a fresh connection: the scenario may have just killed backends
    payments = list(Payment.objects.filter(user_id=user_id).values("id", "status", "stripe_payment_intent_id"))
    return {
        "balance": Profile.objects.get(user_id=user_id).credits,
        "purchase_entries": LedgerEntry.objects.filter(profile__user_id=user_id, kind="purchase").count(),
        "payments": [(p["id"], p["status"], bool(p["stripe_payment_intent_id"])) for p in payments],
    }


def audit_clean() -> bool | None:
    if not has_command("audit_credits"):
        return None
    return manage("audit_credits").returncode == 0


def reconcile(lab: Lab) -> dict:
    result = manage("reconcile_payments", env=lab.back_env)
    summary = [line for line in result.stdout.splitlines() if line.startswith(("Checked", "Dry run"))]
    if not summary:
        return {"exit": result.returncode, "summary": (result.stdout + result.stderr)[-300:]}
    counts = dict((word, int(n)) for n, word in re.findall(r"(\d+) (credited|unknown|error)", summary[-1]))
    short = f"{counts.get('credited', 0)} credited, {counts.get('unknown', 0)} unknown left alone"
    return {"exit": result.returncode, "summary": short, "full": summary[-1]}


def succeeded_event(lab: Lab, payment_id: int) -> dict | None:
    for event in lab.stripe.list_all("events"):
        obj = event["data"]["object"]
        if event["type"] == "payment_intent.succeeded" and obj.get("metadata", {}).get("payment_id") == str(payment_id):
            return event
    return None


def message_of(answer) -> str:
    if answer.status is None:
        return f"no answer ({answer.error.split(':')[0] if answer.error else 'connection closed'})"
    if isinstance(answer.body, dict):
        return answer.body.get("error") or answer.body.get("status") or str(answer.body)
    return str(answer.body)[:120]


def clear_json(answer) -> bool:
    """An answer the page can show as is: JSON with a sentence in "error"."""
    return (
        isinstance(answer.body, dict) and isinstance(answer.body.get("error"), str) and len(answer.body["error"]) > 20
    )


# --- the faults ---------------------------------------------------------------------------------


def charge(browser, server: AppServer):
    return browser.post_json(f"{server.url}/billing/charge/", {"pack": "starter", "payment_method": "pm_card_visa"})


def charge_in_background(browser, server: AppServer):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("answer", charge(browser, server)), daemon=True)
    thread.start()
    return thread, box


def fault_unreachable(lab: Lab) -> dict:
    browser = lab.new_browser("unreachable")
    answer = charge(browser, lab.cut_off)
    return {"answer": answer, "browser": browser, "stripe_accepted": False}


def fault_error500(lab: Lab) -> dict:
    browser = lab.new_browser("error500")
    lab.proxy.set_mode("error500")
    try:
        answer = charge(browser, lab.faulty)
    finally:
        lab.proxy.set_mode("forward")
    return {"answer": answer, "browser": browser, "stripe_accepted": False}


def fault_slow(lab: Lab) -> dict:
    browser = lab.new_browser("slow")
    lab.proxy.set_mode("hold", hold_seconds=STRIPE_TIMEOUT + 2)
    try:
        answer = charge(browser, lab.faulty)
        accepted = lab.proxy.forwarded_create.is_set()
        lab.proxy.answered_create.wait(timeout=STRIPE_TIMEOUT + 10)
    finally:
        lab.proxy.set_mode("forward")
    return {"answer": answer, "browser": browser, "stripe_accepted": accepted}


def fault_db_killed(lab: Lab) -> dict:
    browser = lab.new_browser("dbkill")
    lab.proxy.set_mode("hold")
    try:
        thread, box = charge_in_background(browser, lab.faulty)
        accepted = lab.proxy.forwarded_create.wait(timeout=STRIPE_TIMEOUT - 1)
        killed = _terminate_backends(lab.url)
        lab.proxy.release()
        thread.join(timeout=60)
    finally:
        lab.proxy.set_mode("forward")
    return {"answer": box.get("answer"), "browser": browser, "stripe_accepted": accepted, "backends_killed": killed}


def fault_worker_killed(lab: Lab) -> dict:
    browser = lab.new_browser("sigkill")
    before = lab.faulty.worker_pids()
    lab.proxy.set_mode("hold")
    try:
        thread, box = charge_in_background(browser, lab.faulty)
        accepted = lab.proxy.forwarded_create.wait(timeout=STRIPE_TIMEOUT - 1)
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        thread.join(timeout=60)
        lab.proxy.release()
    finally:
        lab.proxy.set_mode("forward")
    # gunicorn's master replaces the worker; the site must answer again.
    wait_until(lambda: _answers(lab.faulty), timeout=60, what="a replacement worker")
    after = lab.faulty.worker_pids()
    return {
        "answer": box.get("answer"),
        "browser": browser,
        "stripe_accepted": accepted,
        "worker_replaced": bool(after) and not set(after) & set(before),
    }


def fault_never_answers(lab: Lab) -> dict:
    """Stripe accepts the charge and never answers (every attempt, retries included), against the
    server as deployed: the answer must be our JSON 503 before gunicorn kills the worker."""
    browser = lab.new_browser("silent")
    lab.proxy.set_mode("hold", hold_seconds=None)  # held until released: never, as far as the app knows
    held_before = lab.proxy.held
    try:
        started = time.monotonic()
        answer = charge(browser, lab.as_deployed)
        elapsed = time.monotonic() - started
        accepted = lab.proxy.forwarded_create.is_set()
        attempts = lab.proxy.held - held_before
        lab.proxy.release()
    finally:
        lab.proxy.set_mode("forward")
    intents = [
        i for i in lab.stripe.list_all("payment_intents") if i["metadata"].get("user_id") == str(browser.user_id)
    ]
    return {
        "answer": answer,
        "browser": browser,
        "stripe_accepted": accepted,
        "seconds": round(elapsed, 1),
        "create_attempts": attempts,
        "intents_at_stripe": len(intents),
    }


def _answers(server: AppServer) -> bool:
    try:
        return requests.get(f"{server.url}/api/current_user", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _terminate_backends(url: str) -> int:
    import dj_database_url

    name = dj_database_url.parse(url)["NAME"]
    with admin_connection(url) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


CASES = {
    "unreachable": (fault_unreachable, "Stripe unreachable (connection refused)"),
    "error500": (fault_error500, "Stripe answers 500"),
    "slow": (fault_slow, f"Stripe slower than the {STRIPE_TIMEOUT} s client timeout, after accepting the charge"),
    "db_killed": (fault_db_killed, "database connection killed mid-request (pg_terminate_backend)"),
    "worker_killed": (fault_worker_killed, "worker SIGKILLed after Stripe accepted, before our commit"),
    "never_answers": (
        fault_never_answers,
        "Stripe accepts the charge and never answers; the Procfile's worker timeout, production client",
    ),
}


def run_case(lab: Lab, name: str) -> dict:
    inject, title = CASES[name]
    outcome = inject(lab)
    answer, browser = outcome["answer"], outcome["browser"]
    after_fault = books(browser.user_id)
    accepted = outcome["stripe_accepted"]
    no_partial_state = (
        after_fault["purchase_entries"] == 0
        and after_fault["balance"] == 0
        and all(status in ("pending", "failed") for _, status, _ in after_fault["payments"])
    )
    audit_after_fault = audit_clean()

    # Stripe is back: reconcile (twice), and Stripe's own event (twice) where there is one.
    restored = {"reconcile": reconcile(lab), "reconcile again": reconcile(lab)}
    payment_id = after_fault["payments"][0][0] if after_fault["payments"] else None
    event = succeeded_event(lab, payment_id) if payment_id else None
    if event is not None:
        first, second = deliver(lab.faulty.url, event), deliver(lab.faulty.url, event)
        wait_for_webhook_events()  # acknowledged: the task worker credits it
        restored["webhook"] = (
            f"HTTP {first.status} {message_of(first)}; again: HTTP {second.status} {message_of(second)}"
        )
    final = books(browser.user_id)
    expected_balance = 5 if accepted else 0
    site_ok = browser.http.get(f"{lab.faulty.url}/api/current_user", timeout=10).json()
    verdicts = {
        "an answer the page can show": clear_json(answer) if name != "worker_killed" else answer.status is None,
        "no partial state after the fault": no_partial_state and audit_after_fault is not False,
        "right balance restored, credited once": final["balance"] == expected_balance
        and final["purchase_entries"] == (1 if accepted else 0),
        "the site answers normally afterwards": isinstance(site_ok, dict)
        and site_ok.get("credits") == expected_balance,
        "audit_credits clean at the end": audit_clean() is not False,
    }
    if name == "worker_killed":
        verdicts["the killed worker was replaced"] = outcome["worker_replaced"]
    if name == "db_killed":
        verdicts["backends were killed mid-request"] = outcome["backends_killed"] > 0
    if name == "never_answers":
        verdicts["JSON 503 before the worker timeout"] = (
            answer.status == 503 and outcome["seconds"] < lab.worker_timeout - 5
        )
        verdicts["retried with one idempotency key: one PaymentIntent"] = outcome["intents_at_stripe"] == 1
    if accepted:
        verdicts["Stripe had accepted the charge (the hard case)"] = event is not None
    return {
        "fault": title,
        "user_saw": f"HTTP {answer.status}: {message_of(answer)}" if answer else "no answer recorded",
        "stripe_accepted": accepted,
        "after_fault": after_fault,
        "restored_by": restored,
        "final": final,
        "expected_balance": expected_balance,
        "verdicts": verdicts,
        "passed": all(verdicts.values()),
        **({"backends_killed": outcome["backends_killed"]} if "backends_killed" in outcome else {}),
        **{k: outcome[k] for k in ("seconds", "create_attempts", "intents_at_stripe") if k in outcome},
    }


def run(size: Size) -> dict:
    rounds = plan(size)["rounds"]
    url = setup_django("rel_faults")
    from django.db import connection

    connection.close()
    lab = Lab(url)
    cases = []
    try:
        lab.start()
        for round_index in range(rounds):
            for name in FAULTS:
                log(f"round {round_index + 1}/{rounds}: {name}")
                case = run_case(lab, name)
                case["round"] = round_index + 1
                case["name"] = name
                cases.append(case)
                log(f"  {case['user_saw']} -> {'PASS' if case['passed'] else 'FAIL'} {case['verdicts']}")
    finally:
        lab.stop()
    logs = {
        server.name: scan_logs(
            server.log_text(),
            {
                "STRIPE_WEBHOOK_SECRET": lab.env["STRIPE_WEBHOOK_SECRET"],
                "STRIPE_SECRET_KEY": lab.env["STRIPE_SECRET_KEY"],
            },
        )
        for server in (lab.faulty, lab.cut_off, lab.as_deployed)
    }
    verdicts = {f"{c['name']} (round {c['round']})": c["passed"] for c in cases}
    verdicts["no secret in the servers' logs"] = not any(v["secrets_found"] for v in logs.values())
    return {
        "scenario": "Faults",
        "sizes": {
            "rounds of each fault": rounds,
            "faults": len(FAULTS),
            "Stripe client timeout (s)": STRIPE_TIMEOUT,
            "as deployed: worker timeout (s)": lab.worker_timeout,
        },
        "cases": cases,
        "logs": logs,
        "verdicts": verdicts,
        "passed": all(verdicts.values()),
    }


if __name__ == "__main__":
    sys.exit(scenario_main(run))
