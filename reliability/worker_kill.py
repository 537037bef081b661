"""Scenario 7, the task worker killed mid-task: nothing charged twice, nothing lost.

Users with a saved card at localstripe and auto-recharge on, each below the threshold, have a
recharge task enqueued with the database backend (django-tasks-db). A real `manage.py db_worker`
runs them, talking to Stripe through the fault proxy (testbed/faultproxy.py), which holds the
answer to the PaymentIntent create after Stripe has accepted it: the worker is inside the Stripe
call. Once the database shows that recharge's pending payment, the worker's process group is
SIGKILLed and a new worker started; this repeats, then the proxy lets everything through and the
new worker runs what is left. `billing_periodic --now --all` (reconcile) runs until nothing is
pending. Then each user spends below the threshold again, and the worker must recharge them once
more: the slot the killed recharge held is free.

What becomes of the killed worker's task: django-tasks-db marks a row RUNNING when a worker claims
it and only a live worker moves it on (db_worker has no heartbeat and nothing looks for rows left
RUNNING by a dead one: a new worker takes READY rows only). So the row stays RUNNING and the task is
never re-run; the money does not depend on it. The payment it left pending carries its reference
as the idempotency key and its id in the PaymentIntent's metadata, so reconcile finds the intent
Stripe accepted and credits it once through billing.fulfilment. Had the task been re-run, the
database's one-recharge-in-flight rule would have answered it "in flight" while the payment was
pending, and "not needed" once credited (the result counts rows left RUNNING and rows re-run).

    python -m reliability.worker_kill --size smoke|full
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from reliability.harness import ROOT, Size, has_command, log, manage, scenario_main, setup_django, wait_until
from reliability.servers import STRIPE_KEY, LocalStripe, server_env
from testbed.faultproxy import FaultyStripe

DATABASE = "rel_worker_kill"
# The worker's Stripe read timeout: long enough that the kill always lands inside the held call.
STRIPE_TIMEOUT = 20
DEADLINE = 90  # seconds for anything the scenario waits for
PACK = "starter"  # 5 credits
TASK_PATH = "billing.tasks.auto_recharge_task"


def plan(size: Size) -> dict:
    return size.pick(smoke={"users": 3, "kills": 1}, full={"users": 8, "kills": 3})


class Worker:
    """One `manage.py db_worker` process in its own process group (so a kill takes all of it)."""

    def __init__(self, env: dict, log_path: Path, worker_id: str):
        self.worker_id = worker_id
        self.log_path = log_path
        self.log_file = open(log_path, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "db_worker",
                "--no-reload",
                "--no-startup-delay",
                "--interval",
                "0.1",
                "--worker-id",
                worker_id,
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log_file.close()

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if not self.log_file.closed:
            self.log_file.close()


# --- the users -------------------------------------------------------------------------------------


def make_users(stripe: LocalStripe, count: int) -> list[dict]:
    """Users with a saved Visa, auto-recharge on and a balance one below the threshold."""
    from django.contrib.auth import get_user_model

    from billing import autorecharge, cards, ledger

    users = []
    for n in range(count):
        user = get_user_model().objects.create_user(email=f"recharge{n}@example.com", password=None)
        cards.save_card(user, stripe.card("4242424242424242"))
        start = ledger.get_balance(user)
        autorecharge.configure(user, enabled=True, pack=PACK, threshold=start + 1, monthly_limit=5)
        users.append({"id": user.pk, "start": start})
    return users


def enqueue_recharges(users: list[dict]) -> None:
    from billing import tasks

    for user in users:
        tasks.auto_recharge_task.enqueue(user["id"])


def pending_recharges() -> list[int]:
    from billing.models import Payment

    return list(
        Payment.objects.filter(purpose=Payment.Purpose.AUTO_RECHARGE, status=Payment.Status.PENDING).values_list(
            "id", flat=True
        )
    )


def task_rows() -> list[dict]:
    from django_tasks_db.models import DBTaskResult

    return list(
        DBTaskResult.objects.filter(task_path=TASK_PATH).values(
            "id", "status", "worker_ids", "return_value", "args_kwargs", "finished_at"
        )
    )


# --- the kills -------------------------------------------------------------------------------------


def kill_mid_charge(proxy: FaultyStripe, env: dict, logs: Path, number: int) -> dict:
    """Start a worker with Stripe holding its answer; SIGKILL it once its recharge is mid-charge."""
    before = set(pending_recharges())
    proxy.set_mode("hold", hold_seconds=None)
    worker = Worker(env, logs / "worker.log", f"killed-{number}")
    try:

        def mid_charge():
            if not worker.alive():
                raise RuntimeError(f"worker {worker.worker_id} exited; see {worker.log_path}")
            new = set(pending_recharges()) - before
            return new if new and proxy.forwarded_create.is_set() else None

        payments = wait_until(mid_charge, timeout=DEADLINE, interval=0.05, what="a recharge inside the Stripe call")
        worker.kill()
    finally:
        worker.stop()
        proxy.release()  # the held answer goes to a closed socket
        proxy.set_mode("forward")
    running = [row for row in task_rows() if worker.worker_id in row["worker_ids"]]
    log(f"  worker {worker.worker_id} killed mid-charge: payments {sorted(payments)}")
    return {"worker_id": worker.worker_id, "payments": sorted(payments), "task_rows": len(running)}


def drain(worker: Worker, killed_ids: set[str]) -> None:
    """Wait until every recharge task is finished, except those a killed worker held."""

    def drained():
        if not worker.alive():
            raise RuntimeError(f"worker {worker.worker_id} exited; see {worker.log_path}")
        rows = task_rows()
        return all(row["finished_at"] or set(row["worker_ids"]) & killed_ids for row in rows)

    wait_until(drained, timeout=DEADLINE, interval=0.1, what="the restarted worker to run every task")


def reconcile_until_settled(env: dict) -> list[str]:
    """`billing_periodic --now --all` until no recharge is pending (each run settles what it can)."""
    runs = []

    def settled():
        result = manage("billing_periodic", "--now", "--all", env=env)
        line = next((ln for ln in result.stdout.splitlines() if ln.startswith("reconcile_payments")), "")
        runs.append(line or (result.stdout + result.stderr)[-200:])
        return not pending_recharges()

    wait_until(settled, timeout=DEADLINE, interval=1, what="reconcile to settle every recharge")
    return runs


def spend_below_threshold(users: list[dict]) -> None:
    """Each user spends the pack's credits: the debit's signal enqueues a recharge (the database
    backend), which only a free in-flight slot lets through."""
    from django.contrib.auth import get_user_model

    from billing import autorecharge, ledger

    autorecharge.forget_armed()
    for user in users:
        ledger.spend_credits(get_user_model().objects.get(pk=user["id"]), 5, reason="after the kill")


# --- the books -------------------------------------------------------------------------------------


def books(stripe: LocalStripe, users: list[dict]) -> dict:
    from django.contrib.auth import get_user_model

    from billing import ledger
    from billing.models import LedgerEntry, Payment

    ids = {user["id"] for user in users}
    payments = list(
        Payment.objects.filter(user_id__in=ids, purpose=Payment.Purpose.AUTO_RECHARGE).values(
            "id", "user_id", "status", "stripe_payment_intent_id"
        )
    )
    credited = {p["id"]: p for p in payments if p["status"] == Payment.Status.SUCCEEDED}
    entries = Counter(
        LedgerEntry.objects.filter(payment_id__in=[p["id"] for p in payments], kind="purchase").values_list(
            "payment_id", flat=True
        )
    )
    intents = [i for i in stripe.list_all("payment_intents") if i["metadata"].get("user_id") in {str(u) for u in ids}]
    succeeded = Counter(int(i["metadata"]["payment_id"]) for i in intents if i["status"] == "succeeded")
    succeeded_ids = {int(i["metadata"]["payment_id"]): i["id"] for i in intents if i["status"] == "succeeded"}
    balances = {u["id"]: ledger.get_balance(get_user_model().objects.get(pk=u["id"])) for u in users}
    return {
        "payments": len(payments),
        "statuses": dict(Counter(p["status"] for p in payments)),
        "credited": len(credited),
        "credited_once": all(entries[pid] == 1 for pid in credited)
        and all(entries[p["id"]] == 0 for p in payments if p["id"] not in credited),
        "one_intent_each": all(succeeded[pid] == 1 for pid in credited)
        and all(succeeded_ids.get(pid) == p["stripe_payment_intent_id"] for pid, p in credited.items()),
        "unrecorded_at_stripe": sorted(pid for pid in succeeded if pid not in credited),
        "succeeded_at_stripe": sum(succeeded.values()),
        "intents_at_stripe": len(intents),
        "balances": balances,
        "per_user": dict(Counter(p["user_id"] for p in payments if p["id"] in credited)),
    }


def audit_clean() -> bool | None:
    if not has_command("audit_credits"):
        return None
    return manage("audit_credits").returncode == 0


# --- the scenario ----------------------------------------------------------------------------------


def scenario(size: Size, url: str, stripe: LocalStripe, proxy: FaultyStripe) -> dict:
    sizes = plan(size)
    logs = Path(tempfile.mkdtemp(prefix="rel_worker_kill_"))
    through_proxy = server_env(url, proxy.base, STRIPE_TIMEOUT_SECONDS=str(STRIPE_TIMEOUT))
    direct = server_env(url, stripe.base)
    users = make_users(stripe, sizes["users"])
    enqueue_recharges(users)
    kills = [kill_mid_charge(proxy, through_proxy, logs, n + 1) for n in range(sizes["kills"])]
    killed_ids = {k["worker_id"] for k in kills}
    killed_payments = sorted(pid for k in kills for pid in k["payments"])

    worker = Worker(through_proxy, logs / "worker.log", "restarted")
    try:
        drain(worker, killed_ids)
        left_running = [row for row in task_rows() if set(row["worker_ids"]) & killed_ids]
        rerun = [row for row in left_running if row["status"] != "RUNNING" or len(row["worker_ids"]) > 1]
        pending_before_reconcile = len(pending_recharges())
        reconcile_runs = reconcile_until_settled(direct)
        after_reconcile = books(stripe, users)
        again = manage("billing_periodic", "--now", "--all", env=direct)
        after_again = books(stripe, users)

        spend_below_threshold(users)
        first_round = {u["id"]: 1 for u in users}

        def recharged_again():
            if not worker.alive():
                raise RuntimeError(f"the restarted worker exited; see {worker.log_path}")
            per_user = books(stripe, users)["per_user"]
            return all(per_user.get(uid, 0) == n + 1 for uid, n in first_round.items())

        wait_until(recharged_again, timeout=DEADLINE, interval=0.2, what="a second recharge for every user")
    finally:
        worker.stop()
    final = books(stripe, users)
    audit = audit_clean()
    expected = {u["id"]: u["start"] + 5 for u in users}  # +5, -5, +5
    verdicts = {
        "each kill landed inside the Stripe call (a pending recharge, Stripe had accepted)": all(
            k["payments"] and k["task_rows"] == 1 for k in kills
        ),
        "each killed recharge left pending (neither failed nor credited) until reconcile": pending_before_reconcile
        == len(killed_payments),
        "every recharge credited exactly once (one purchase entry per succeeded payment)": final["credited_once"],
        "at Stripe, one succeeded PaymentIntent per credited payment, the one recorded": final["one_intent_each"],
        "no succeeded PaymentIntent at Stripe left unrecorded": not final["unrecorded_at_stripe"]
        and final["succeeded_at_stripe"] == final["credited"],
        "no payment left pending after reconcile": final["statuses"].keys() <= {"succeeded"}
        and after_reconcile["statuses"].keys() <= {"succeeded"},
        "a second reconcile changed nothing": again.returncode == 0 and after_again == after_reconcile,
        "the in-flight slot is free again: every user recharged a second time": all(
            final["per_user"].get(u["id"]) == 2 for u in users
        ),
        "right balance for every user": final["balances"] == expected,
        "audit_credits clean (ledger, grants, holds)": audit is not False,
    }
    return {
        "scenario": "Worker killed mid-task",
        "sizes": {
            "users": len(users),
            "workers SIGKILLed mid-charge": len(kills),
            "Stripe read timeout (s)": STRIPE_TIMEOUT,
        },
        "kills": kills,
        "killed_payments": killed_payments,
        "killed_task_rows": {
            "left RUNNING, never re-run": len(left_running) - len(rerun),
            "re-run": len(rerun),
            "statuses": dict(Counter(row["status"] for row in left_running)),
        },
        "pending_before_reconcile": pending_before_reconcile,
        "reconcile_runs": reconcile_runs,
        "after_reconcile": after_reconcile,
        "final": final,
        "audit_clean": audit,
        "verdicts": verdicts,
        "passed": all(verdicts.values()),
    }


def stripe_env(base: str) -> dict:
    """This process's Stripe (it saves the users' cards at localstripe directly)."""
    return {"STRIPE_API_BASE": base, "STRIPE_SECRET_KEY": STRIPE_KEY}


def run(size: Size) -> dict:
    stripe = LocalStripe()
    proxy = FaultyStripe(stripe.base)
    try:
        url = setup_django(DATABASE, **stripe_env(stripe.base))
        return scenario(size, url, stripe, proxy)
    finally:
        proxy.stop()
        stripe.stop()


if __name__ == "__main__":
    sys.exit(scenario_main(run))
