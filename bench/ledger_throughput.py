"""Ledger throughput: `spend_credits`/`add_credits` against a hand-written psycopg transaction.

Each configuration runs N worker processes (forked, each with its own connection) for a fixed
time after a shared start barrier and counts completed operations. "spread" picks one of 1,000
profiles at random per operation; "hot" sends every operation to one profile, so writers queue
on its row lock and throughput is set by how long each transaction holds that lock.

Implementations, run alternately within each run so drift on a shared machine hits both alike:
- app:      billing.ledger.spend_credits / add_credits, exactly as the site calls them, on profiles
            holding one open grant (a spend draws on it: one grant read, updated and allocated).
- app_3_grants, app_100_grants (spend only): the same call on profiles holding 3 or 100 open
            grants (one never-expiring promotional grant, then promotional grants expiring in 31,
            33, ... days and never-expiring paid ones), so a spend draws in the drawdown order
            from the soonest-expiring grant. The grant-aware figures: what a customer with a few
            promotions and purchases costs, and whether a long list of grants costs more.
- hold_capture (beside spends, at 1 and 8 processes): `hold_credits` of 1 credit followed by
            `capture_hold` of all of it, one operation, on the profiles holding 3 open grants: what
            a metered call costs (reserve first, settle after), against one `spend_credits` on the
            same profiles in the same run. The 8-process figures over 1,000 profiles against the
            1-process ones show whether a hold serialises anything beyond its own profile.
- baseline: the hand-written single-balance transaction with psycopg: BEGIN; UPDATE billing_profile SET
            credits = credits -/+ 1 WHERE id = %s [AND credits >= 1] RETURNING credits;
            INSERT INTO billing_ledgerentry ...; COMMIT. Same connection settings as Django's
            connection: the same parameters (server, user, database, loopback TCP, client
            encoding, time zone) and the same binding (client-side, no prepared statements).
- baseline_prepared (stricter, reported beside it): the same transaction on psycopg's default
            cursor (server-side parameters, statements prepared after 5 uses), the fastest form
            psycopg offers, which Django's connection is not configured to use.
- orm_naive (reference, spend only): the portable ORM form (F() update, read back, insert in one
            atomic block), which billing.ledger uses on SQLite; the "before" of the one-statement
            form on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.stats import Figure

SPREAD_PROFILES = 1000
GRANTS = {"app": 1, "app_3_grants": 3, "app_100_grants": 100, "hold_capture": 3}  # open grants per profile, by impl
# Large enough that no grant drawn first runs out during a full bench.
GRANT_CREDITS = 100_000_000


@dataclass(frozen=True)
class Config:
    op: str  # "spend" | "add"
    target: str  # "spread" | "hot"
    procs: int

    @property
    def label(self) -> str:
        return f"{self.op}, {self.target}, {self.procs} proc{'s' if self.procs > 1 else ''}"


@dataclass
class Plan:
    runs: int
    seconds: float
    chart_procs: tuple[int, ...]  # spend, app and baseline, both targets: the chart's x axis
    add_procs: tuple[int, ...]
    naive_procs: tuple[int, ...]
    many_grants_procs: tuple[int, ...]  # where app_100_grants is measured beside app_3_grants
    holds_procs: tuple[int, ...]  # where hold_capture is measured beside app_3_grants (fewest, most)

    def groups(self) -> list[tuple[Config, tuple[str, ...]]]:
        out = []
        for target in ("spread", "hot"):
            for procs in self.chart_procs:
                impls = ("app", "app_3_grants", "baseline")
                if procs in self.many_grants_procs:
                    impls += ("app_100_grants",)
                if procs in self.holds_procs:
                    impls += ("hold_capture",)
                if procs in self.naive_procs:
                    impls += ("baseline_prepared", "orm_naive")
                out.append((Config("spend", target, procs), impls))
            for procs in self.add_procs:
                out.append((Config("add", target, procs), ("app", "baseline")))
        return out


FULL = Plan(
    runs=5,
    seconds=2.0,
    chart_procs=(1, 2, 4, 8),
    add_procs=(1, 8),
    naive_procs=(1, 8),
    many_grants_procs=(1, 8),
    holds_procs=(1, 8),
)
SMOKE = Plan(
    runs=2,
    seconds=0.25,
    chart_procs=(1, 2),
    add_procs=(1,),
    naive_procs=(1,),
    many_grants_procs=(1,),
    holds_procs=(1, 2),
)


@dataclass
class Profiles:
    spread: list[tuple[int, int]]  # (user_id, profile_id)
    hot: tuple[int, int]


Targets = dict[int | str, Profiles]  # spends: by open grants per profile; "add": the adds' own


def prepare() -> Targets:
    """For 1, 3 and 100 open grants each: 1,000 spread profiles and one hot one, every grant
    large enough for the whole bench; and as many profiles for the adds, each of which opens a
    grant, so that they never add to the grants the spends are measured on."""
    from bench.fill import add_grants, fill
    from billing.models import Profile

    targets = {}
    for grants in [*sorted(set(GRANTS.values())), "add"]:
        # "ledger-1g-", "ledger-3g-", "ledger-100g-", "ledger-addg-": no prefix is another's prefix.
        prefix = f"ledger-{grants}g-"
        fill(users=SPREAD_PROFILES + 1, entries_per_user=1, prefix=prefix, grant=GRANT_CREDITS)
        if grants != "add" and grants > 1:
            add_grants(prefix=prefix, extra=grants - 1, amount=GRANT_CREDITS)
        rows = list(
            Profile.objects.filter(user__email__startswith=prefix).order_by("user__email").values_list("user_id", "id")
        )
        targets[grants] = Profiles(spread=rows[:SPREAD_PROFILES], hot=rows[SPREAD_PROFILES])
    return targets


def run(plan: Plan, log) -> dict:
    """Returns {(config, impl): Figure(ops/s)}, per-run ratios to the baseline {(config, impl):
    Figure(x)}, per-run ratios of 100 open grants to 3 {config: Figure(x)}, of hold+capture to
    one spend on 3 grants {config: Figure(x)}, and per target the per-run scaling (most
    processes / fewest) of spends and of hold+capture and its ratio {(target, what): Figure(x)}."""
    from bench.fill import vacuum_analyze

    targets = prepare()
    throughput: dict[tuple[Config, str], Figure] = {}
    ratios: dict[tuple[Config, str], Figure] = {}
    many_grants: dict[Config, Figure] = {}
    holds: dict[Config, Figure] = {}
    holds_scaling: dict[tuple[str, str], Figure] = {}
    for run_index in range(plan.runs):
        by_config = {}
        for config, impls in plan.groups():
            # Alternate who goes first: a shared machine's drift then favours neither side.
            order = impls if run_index % 2 == 0 else tuple(reversed(impls))
            measured = {}
            for impl in order:
                # As autovacuum would: spends leave a dead version of the profile and of the grant
                # drawn, captures one of their hold.
                vacuum_analyze("billing_profile", "billing_creditgrant", "billing_hold")
                ops = _measure(impl, config, targets, plan.seconds)
                measured[impl] = ops
                throughput.setdefault((config, impl), Figure(f"{impl}: {config.label}", "ops/s")).add(ops)
            for impl in impls:
                if impl != "baseline" and measured["baseline"]:
                    ratio = measured[impl] / measured["baseline"]
                    ratios.setdefault((config, impl), Figure(f"{impl}/baseline: {config.label}", "x")).add(ratio)
            if "app_100_grants" in measured and measured["app_3_grants"]:
                ratio = measured["app_100_grants"] / measured["app_3_grants"]
                many_grants.setdefault(config, Figure(f"100 grants / 3 grants: {config.label}", "x")).add(ratio)
            if "hold_capture" in measured and measured["app_3_grants"]:
                ratio = measured["hold_capture"] / measured["app_3_grants"]
                holds.setdefault(config, Figure(f"hold+capture / spend, 3 grants: {config.label}", "x")).add(ratio)
            by_config[config] = measured
            log(
                f"ledger run {run_index + 1}/{plan.runs} {config.label}: "
                + ", ".join(f"{impl} {measured[impl]:,.0f}/s" for impl in impls)
            )
        _add_scaling(plan, by_config, holds_scaling)
    return {
        "throughput": throughput,
        "ratios": ratios,
        "many_grants": many_grants,
        "holds": holds,
        "holds_scaling": holds_scaling,
    }


def _add_scaling(plan: Plan, by_config: dict, out: dict) -> None:
    """One run's scaling from the fewest to the most processes, of spends (3 grants) and of
    hold+capture, and the second over the first: near 1 when a hold serialises no more than a
    spend does."""
    if len(plan.holds_procs) < 2:
        return
    fewest, most = min(plan.holds_procs), max(plan.holds_procs)
    for target in ("spread", "hot"):
        low, high = by_config.get(Config("spend", target, fewest)), by_config.get(Config("spend", target, most))
        if not low or not high or not low["app_3_grants"] or not low["hold_capture"]:
            continue
        spends = high["app_3_grants"] / low["app_3_grants"]
        holds = high["hold_capture"] / low["hold_capture"]
        span = f"{most} procs / {fewest}, {target}"
        for what, value in (("spend", spends), ("hold_capture", holds), ("ratio", holds / spends if spends else 0.0)):
            out.setdefault((target, what), Figure(f"{what} scaling: {span}", "x")).add(value)


def _measure(impl: str, config: Config, targets: Targets, seconds: float) -> float:
    from django.db import connections

    connections.close_all()  # children must not share the parent's socket
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(config.procs)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(impl, config, targets, seconds, i, barrier, results), daemon=True)
        for i in range(config.procs)
    ]
    for w in workers:
        w.start()
    counts = []
    deadline = time.monotonic() + seconds + 60
    for _ in workers:
        counts.append(results.get(timeout=max(1.0, deadline - time.monotonic())))
    for w in workers:
        w.join(timeout=10)
    errors = [c for c in counts if isinstance(c, str)]
    if errors:
        raise RuntimeError(f"{impl} {config.label} failed: {errors[0]}")
    return sum(counts) / seconds


def _worker(impl, config, targets, seconds, index, barrier, results):
    from django.db import connections

    connections.close_all()
    try:
        op = _OPS[impl](config.op)
        rng = random.Random(index)
        # The baselines write single balances: any profile serves them.
        profiles = targets["add" if config.op == "add" else GRANTS.get(impl, 1)]
        if config.target == "hot":

            def pick():
                return profiles.hot

        else:

            def pick():
                return profiles.spread[rng.randrange(len(profiles.spread))]

        for _ in range(20):  # warm up: connect, prepare, fill caches
            op(*pick())
        barrier.wait(timeout=60)
        count = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            op(*pick())
            count += 1
        results.put(count)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the bench
        results.put(f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            barrier.abort()  # release the other workers at once
    finally:
        connections.close_all()


def _app(op: str):
    from accounts.models import User
    from billing.ledger import add_credits, spend_credits
    from billing.models import LedgerEntry

    bonus = LedgerEntry.Kind.BONUS
    users: dict[int, User] = {}

    def call(user_id, _profile_id):
        user = users.get(user_id) or users.setdefault(user_id, User(pk=user_id))
        if op == "spend":
            spend_credits(user, 1, reason="bench spend")
        else:
            add_credits(user, 1, kind=bonus, reason="bench add")

    return call


def _hold_capture(op: str):
    from accounts.models import User
    from billing.ledger import capture_hold, hold_credits

    if op != "spend":
        raise ValueError("hold_capture is measured beside spends only")
    users: dict[int, User] = {}

    def call(user_id, _profile_id):
        user = users.get(user_id) or users.setdefault(user_id, User(pk=user_id))
        capture_hold(hold_credits(user, 1, reason="bench hold"))

    return call


def _baseline(op: str, *, prepared: bool = False):
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    params.pop("context", None)  # Django's own type adapters; psycopg's defaults suffice here
    if prepared:
        params.pop("cursor_factory", None)
        params.pop("prepare_threshold", None)
    else:
        params["cursor_factory"] = psycopg.ClientCursor  # what Django's cursor class derives from
    conn = psycopg.connect(**params, autocommit=True)
    conn.execute("SET TIME ZONE 'UTC'")
    update = (
        "UPDATE billing_profile SET credits = credits - 1 WHERE id = %s AND credits >= 1 RETURNING credits"
        if op == "spend"
        else "UPDATE billing_profile SET credits = credits + 1 WHERE id = %s RETURNING credits"
    )
    insert = (
        "INSERT INTO billing_ledgerentry (profile_id, delta, balance_after, kind, reason, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
    )
    # "grant" is the stored value of LedgerEntry.Kind.BONUS; this baseline writes raw SQL.
    delta, kind, reason = (-1, "spend", "bench spend") if op == "spend" else (1, "grant", "bench add")
    cursor = conn.cursor()

    def call(_user_id, profile_id):
        with conn.transaction():
            cursor.execute(update, (profile_id,))
            row = cursor.fetchone()
            if row is None:
                raise RuntimeError("balance exhausted")
            cursor.execute(insert, (profile_id, delta, row[0], kind, reason, datetime.now(UTC)))

    return call


def _orm_naive(op: str):
    """The ledger's own portable ORM path (F() update, read back, insert in one transaction),
    forced onto PostgreSQL as a reference; spend only."""
    from django.db import router
    from django.utils import timezone

    from billing.ledger.portable import write_portable
    from billing.models import LedgerEntry

    if op != "spend":
        raise ValueError("orm_naive is measured for spend only")
    alias = router.db_for_write(LedgerEntry)
    fields = {
        "delta": -1,
        "kind": "spend",
        "reason": "bench spend",
        "staff_note": "",
        "actor_id": None,
        "payment_id": None,
        "idempotency_key": None,
    }

    def call(user_id, _profile_id):
        if write_portable(alias, user_id, fields, timezone.now()) is None:
            raise RuntimeError("balance exhausted")

    return call


def _baseline_prepared(op: str):
    return _baseline(op, prepared=True)


_OPS = {
    "app": _app,
    "app_3_grants": _app,
    "app_100_grants": _app,
    "hold_capture": _hold_capture,
    "baseline": _baseline,
    "baseline_prepared": _baseline_prepared,
    "orm_naive": _orm_naive,
}
