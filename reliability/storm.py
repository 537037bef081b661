"""Scenario 1, the ledger storm: N processes x M mixed operations on 3 profiles, on PostgreSQL.

Each process calls billing.ledger directly (spend 30 %, hold 15 %, add 17 %, staff adjust +/- 13 %,
grant 10 %, clawback 10 %, 1-5 credits each, and the expiry sweep 5 %), about 10 % of its attempts
replaying an idempotency key that some process (often another one, often at the same moment)
used earlier. An operation is a pure function of its key, so a replay is the same operation and
must return the first entry. Half the grants (40-120 credits) expire within a second of being made, so
spends, clawbacks and sweeps meet credits expiring under them; clawbacks take from the
profile's purchase first (docs/DESIGN.md, "Credit grants"). A hold (docs/DESIGN.md, "Holds") is
then captured whole (40 %), captured in part, perhaps nothing (20 %), released (20 %), or left
to expire within half a second (20 %), for the sweeps, spends and holds of any process to meet.

Afterwards, from the database and the workers' own accounts:
- the ledger invariant holds (billing/ledger/invariants.py: credits == sum(delta) == newest
  balance_after for each profile, and every balance_after is the running sum of its profile),
  the grants agree with it (grant_problems: the balance is what the grants hold, every debit's
  draws add up, nothing drawn from a grant after it expired), and audit_credits, which prints
  those same checks, is clean; after a last expire_credits no open grant and no active hold is
  past its expiry;
- each profile's `held` is the sum of its active holds, no active hold expires before its
  profile's `next_hold_expiry`, and every captured hold's entry takes what it captured;
- no balance_after below zero, ever, and no negative balance;
- every attempt is accounted for: successes + refusals == attempts, no other outcome;
- each idempotency key has one entry (or, for a hold, one hold), and every attempt with that key
  was given it;
- the entries in the database are exactly the ones the workers were told about.

    python -m reliability.storm --size smoke|full
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import sys
import time
from collections import Counter, defaultdict

from reliability import storm_checks
from reliability.harness import Size, log, scenario_main, setup_django

PROFILES = 3
SEED_CREDITS = 50
PURCHASED_CREDITS = 20  # each profile's one purchase, what its clawbacks take from first
REPLAY_SHARE = 0.10
KEYED_SHARE = 0.70


def plan(size: Size) -> dict:
    return size.pick(smoke={"procs": 4, "ops": 250}, full={"procs": 8, "ops": 2000})


def operation(proc: int, index: int) -> dict:
    """The operation that key (proc, index) stands for: the same whoever replays it."""
    rng = random.Random(f"storm:{proc}:{index}")
    roll = rng.random()
    amount = rng.randint(1, 5)
    expires_in = None  # seconds, for grants
    then, capture = None, None  # for holds: what follows, and how much a capture takes
    if roll < 0.3:
        op, delta = "spend", -amount
    elif roll < 0.45:
        op, delta = "hold", -amount
        then = rng.choices(("capture", "capture_part", "release", "expire"), weights=(4, 2, 2, 2))[0]
        capture = amount if then == "capture" else rng.randint(0, amount) if then == "capture_part" else None
        if then == "expire":
            expires_in = rng.uniform(0.05, 0.5)
    elif roll < 0.62:
        op, delta = "add", amount
    elif roll < 0.75:
        op, delta = "adjust", amount if rng.random() < 0.5 else -amount
    elif roll < 0.85:
        op, delta = "grant", amount
        if rng.random() < 0.5:
            # Larger, so that spends (which draw the soonest expiry first) leave some to expire.
            delta, expires_in = rng.randint(40, 120), rng.uniform(0.2, 0.8)
    elif roll < 0.95:
        op, delta = "clawback", -amount  # at most: never below zero
    else:
        op, delta = "expire", 0
    keyed = op != "expire" and rng.random() < KEYED_SHARE
    return {
        "op": op,
        "delta": delta,
        "expires_in": expires_in,
        "then": then,
        "capture": capture,
        "profile": rng.randrange(PROFILES),
        "key": f"storm:{proc}:{index}" if keyed else None,
    }


def attempts_for(proc: int, procs: int, ops: int) -> list[dict]:
    """The worker's sequence: its own operations, about 10 % replaced by replays of a keyed
    operation some process does (or did) at an earlier index."""
    rng = random.Random(f"attempts:{proc}")
    out = []
    for index in range(ops):
        if index > 0 and rng.random() < REPLAY_SHARE:
            for _ in range(20):  # find an earlier keyed operation
                other = operation(rng.randrange(procs), rng.randrange(index))
                if other["key"]:
                    out.append({**other, "replay": True})
                    break
            else:
                out.append({**operation(proc, index), "replay": False})
        else:
            out.append({**operation(proc, index), "replay": False})
    return out


def _worker(proc, procs, ops, users, staff_id, payments, barrier, results):
    from django.db import connections

    connections.close_all()  # never share the parent's socket
    try:
        from datetime import timedelta

        from django.utils import timezone

        from accounts.models import User
        from billing import ledger
        from billing.exceptions import InsufficientCredits
        from billing.models import LedgerEntry, Payment

        bonus = LedgerEntry.Kind.BONUS
        people = {i: User.objects.get(pk=pk) for i, pk in enumerate(users)}
        purchases = {i: Payment.objects.get(pk=pk) for i, pk in enumerate(payments)}
        staff = User.objects.get(pk=staff_id)
        outcomes = Counter()
        keyed = []  # (key, entry id, delta) for every keyed success
        keyless = []  # (entry id, delta) for every keyless success
        captures = []  # (entry id, its key, delta) for every capture that took credits
        holds_by_key = []  # (key, hold id) for every keyed hold
        attempts = attempts_for(proc, procs, ops)
        barrier.wait(timeout=60)
        started = time.perf_counter()
        for attempt in attempts:
            user = people[attempt["profile"]]
            delta, key = attempt["delta"], attempt["key"]
            reason = f"storm {attempt['op']} {key or 'no key'}"
            try:
                if attempt["op"] == "spend":
                    entry = ledger.spend_credits(user, -delta, reason=reason, idempotency_key=key)
                elif attempt["op"] == "hold":
                    _hold(ledger, user, attempt, reason, outcomes, captures, holds_by_key)
                    continue
                elif attempt["op"] == "add":
                    entry = ledger.add_credits(user, delta, kind=bonus, reason=reason, idempotency_key=key)
                elif attempt["op"] == "adjust":
                    entry = ledger.adjust_credits(user, delta, reason=reason, actor=staff, idempotency_key=key)
                elif attempt["op"] == "grant":
                    expires_in = attempt["expires_in"]
                    expires_at = timezone.now() + timedelta(seconds=expires_in) if expires_in else None
                    entry = ledger.grant_credits(user, delta, reason=reason, expires_at=expires_at, idempotency_key=key)
                elif attempt["op"] == "clawback":
                    kind = LedgerEntry.Kind.REFUND if -delta % 2 else LedgerEntry.Kind.DISPUTE
                    entry, _short = ledger.claw_back_credits(
                        user, -delta, kind=kind, reason=reason, payment=purchases[attempt["profile"]],
                        idempotency_key=key,
                    )  # fmt: skip
                    if entry is None:  # nothing left to take: refused, as a short spend is
                        outcomes["refused"] += 1
                        outcomes["refused_clawback"] += 1
                        continue
                    delta = entry.delta  # what it could take, never more than asked
                    if not attempt["delta"] <= delta < 0:
                        outcomes["error"] += 1
                        outcomes["error: a clawback took more than asked"] += 1
                else:
                    ledger.expire_credits()
                    outcomes["succeeded"] += 1
                    outcomes["succeeded_expire"] += 1
                    continue
            except InsufficientCredits:
                outcomes["refused"] += 1
                outcomes[f"refused_{attempt['op']}"] += 1
                continue
            except Exception as exc:  # noqa: BLE001 - any other outcome is a failure, counted and shown
                outcomes["error"] += 1
                outcomes[f"error: {type(exc).__name__}: {exc}"[:200]] += 1
                continue
            outcomes["succeeded"] += 1
            outcomes[f"succeeded_{attempt['op']}"] += 1
            if attempt["replay"]:
                outcomes["replays"] += 1
            if entry.delta != delta:
                outcomes["error"] += 1
                outcomes["error: entry delta differs from the operation"] += 1
            if key:
                keyed.append((key, entry.pk, entry.delta))
            else:
                keyless.append((entry.pk, entry.delta))
        elapsed = time.perf_counter() - started
        results.put(
            {
                "proc": proc,
                "attempts": len(attempts),
                "outcomes": dict(outcomes),
                "keyed": keyed,
                "keyless": keyless,
                "captures": captures,
                "holds_by_key": holds_by_key,
                "elapsed": elapsed,
            }
        )
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the scenario
        results.put({"proc": proc, "crash": f"{type(exc).__name__}: {exc}"})
        with contextlib.suppress(Exception):  # the barrier may already be broken
            barrier.abort()
    finally:
        connections.close_all()


def _hold(ledger, user, attempt, reason, outcomes, captures, holds_by_key) -> None:
    """Hold, then capture, release or leave to expire: one attempt, refused when the hold is, or
    when its capture finds the credits gone (they expired meanwhile)."""
    from datetime import timedelta

    from billing.exceptions import InsufficientCredits

    key, then = attempt["key"], attempt["then"]
    expires_in = {"expires_in": timedelta(seconds=attempt["expires_in"])} if attempt["expires_in"] else {}
    try:
        hold = ledger.hold_credits(user, -attempt["delta"], reason=reason, idempotency_key=key, **expires_in)
    except InsufficientCredits:
        outcomes["refused"] += 1
        outcomes["refused_hold"] += 1
        return
    if key:
        holds_by_key.append((key, hold.pk))
    if hold.amount != -attempt["delta"]:
        outcomes["error"] += 1
        outcomes["error: a hold of another amount"] += 1
    if then in ("capture", "capture_part"):
        try:
            entry = ledger.capture_hold(hold, attempt["capture"], reason=f"storm capture {key or 'no key'}")
        except InsufficientCredits:
            outcomes["refused"] += 1
            outcomes["refused_capture"] += 1
            return
        if (entry.delta if entry else 0) != -attempt["capture"]:
            outcomes["error"] += 1
            outcomes["error: a capture took other than asked"] += 1
        if entry is not None:
            captures.append((entry.pk, entry.idempotency_key, entry.delta))
    elif then == "release":
        ledger.release_hold(hold)
    outcomes["succeeded"] += 1
    outcomes[f"succeeded_hold_{then}"] += 1
    if attempt["replay"]:
        outcomes["replays"] += 1


def run(size: Size) -> dict:
    setup_django("rel_storm")
    from django.db import connection, connections
    from django.utils import timezone

    from accounts.models import User
    from billing import ledger
    from billing.models import CreditPack, LedgerEntry, Payment

    sizes = plan(size)
    procs, ops = sizes["procs"], sizes["ops"]
    users, payments = [], []
    pack = CreditPack.objects.get(slug="starter")
    for i in range(PROFILES):
        user = User.objects.create_user(email=f"storm{i}@example.com", password=None)
        ledger.add_credits(
            user, SEED_CREDITS, kind=LedgerEntry.Kind.BONUS, reason="opening grant", idempotency_key=f"seed:{i}"
        )
        payment = Payment.objects.create(
            user=user, pack=pack, credits=PURCHASED_CREDITS, amount=pack.amount, currency=pack.currency,
            status=Payment.Status.SUCCEEDED,
        )  # fmt: skip
        ledger.add_credits(user, PURCHASED_CREDITS, kind=LedgerEntry.Kind.PURCHASE, reason="purchase", payment=payment)
        users.append(user.pk)
        payments.append(payment.pk)
    staff = User.objects.create_user(email="storm-staff@example.com", password=None, is_staff=True)

    log(f"storm: {procs} processes x {ops} operations on {PROFILES} profiles")
    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(procs + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(p, procs, ops, users, staff.pk, payments, barrier, results), daemon=True)
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    barrier.wait(timeout=120)
    wall_start = time.perf_counter()
    reports = [results.get(timeout=600) for _ in workers]
    wall = time.perf_counter() - wall_start
    for w in workers:
        w.join(timeout=30)

    crashes = [r["crash"] for r in reports if "crash" in r]
    outcomes = Counter()
    for r in reports:
        outcomes.update(r.get("outcomes", {}))
    attempts = sum(r.get("attempts", 0) for r in reports)

    # Every attempt with a key was given the same entry; every entry given exists, as told.
    entries_by_key = defaultdict(set)
    told = {}
    for r in reports:
        for key, pk, delta in r.get("keyed", []):
            entries_by_key[key].add(pk)
            told[pk] = (key, delta)
        for pk, delta in r.get("keyless", []):
            told[pk] = (None, delta)
        for pk, key, delta in r.get("captures", []):
            told[pk] = (key, delta)
    holds_by_key = defaultdict(set)
    for r in reports:
        for key, pk in r.get("holds_by_key", []):
            holds_by_key[key].add(pk)
    split_keys = sorted(k for k, pks in [*entries_by_key.items(), *holds_by_key.items()] if len(pks) > 1)

    checks = storm_checks.database_checks(users, told)
    swept_at = timezone.now()  # one instant for the sweep and its check: grants and holds keep expiring
    swept = ledger.expire_credits(swept_at)  # what the workers' sweeps left, if anything
    checks["expired_open_after_sweep"] = storm_checks.expired_open(swept_at)
    checks.update(storm_checks.hold_checks(swept_at))
    audit = storm_checks.audit()
    control = storm_checks.negative_control(users[0], told)

    errors = {k: v for k, v in outcomes.items() if k.startswith("error")}
    verdicts = {
        "no worker crashed": not crashes,
        "successes + refusals == attempts": outcomes["succeeded"] + outcomes["refused"] == attempts
        and not outcomes["error"],
        "no balance_after below zero, no negative balance": checks["negative_balance_after"] == 0
        and checks["negative_credits"] == 0,
        "credits == sum(delta) == newest balance_after (billing.ledger.invariants)": checks["profiles_broken"] == 0,
        "every balance_after is the running sum of its profile": checks["running_sum_mismatches"] == 0,
        "grants agree with the ledger, nothing drawn after expiry (grant_problems)": checks["grant_problems"] == 0,
        "no open grant past its expiry after expire_credits": checks["expired_open_after_sweep"] == 0,
        "no active hold past its expiry after expire_credits": checks["active_holds_past_expiry"] == 0,
        "held == sum of active holds, next_hold_expiry before them, captures as captured": checks["held_mismatches"]
        == 0
        and checks["holds_before_hint"] == 0
        and checks["captures_off"] == 0,
        "each idempotency key applied once": checks["duplicate_keys"] == 0 and not split_keys,
        "database entries == entries the workers were told about": checks["untold_entries"] == 0
        and checks["missing_or_wrong_entries"] == 0,
        "audit_credits clean": audit["clean"] is not False,
        "the checks catch a corrupted balance (negative control)": control["caught"],
    }
    connection.close()
    return {
        "scenario": "Ledger storm",
        "sizes": {"processes": procs, "operations per process": ops, "profiles": PROFILES},
        "attempts": attempts,
        "succeeded": outcomes["succeeded"],
        "refused": outcomes["refused"],
        "replays": outcomes["replays"],
        "by_operation": {
            op: {"succeeded": outcomes[f"succeeded_{op}"], "refused": outcomes[f"refused_{op}"]}
            for op in ("spend", "add", "adjust", "grant", "clawback", "expire")
        },
        "holds": {
            "refused": outcomes["refused_hold"],
            "capture refused (credits expired)": outcomes["refused_capture"],
            **{then: outcomes[f"succeeded_hold_{then}"] for then in ("capture", "capture_part", "release", "expire")},
        },
        "expired_by_the_last_sweep": swept,
        "distinct_keys_applied": len(entries_by_key),
        "errors": errors,
        "crashes": crashes,
        "split_keys": split_keys[:10],
        "database": checks,
        "audit_credits": audit,
        "negative_control": control,
        "wall_seconds": round(wall, 2),
        "operations_per_second": round(attempts / wall) if wall else None,
        "verdicts": verdicts,
        "passed": all(verdicts.values()),
    }


if __name__ == "__main__":
    sys.exit(scenario_main(run))
