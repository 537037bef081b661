"""`python -m bench.ratelimit_compare`: the charge rate limiter against django-ratelimit, measured.

Does a limit of 10 hold when many processes charge for one user at the same moment, and what does
counting one request cost? Three contenders, each counting into a shared store:

- `upsert`: billing.ratelimit.hit, one `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` (PostgreSQL);
- `django-ratelimit + DatabaseCache`: `cache.add`, then `cache.incr`, which Django's database cache
  does as a read, then a write;
- `django-ratelimit + RedisCache`: the same calls on Django's Redis cache (Redis `INCR`).

Each trial starts P forked processes (each with its own connections) at a barrier; each makes A
attempts in one fresh bucket with a limit of 10, and the allowed ones are counted. The cost is
the mean time of one counted request, one process, no contention. Uses the bench database
(BENCH_DATABASE_URL or `<DATABASE_URL's name>_bench`, dropped and re-created) and Redis at
REDIS_URL (default redis://127.0.0.1:6379/0; only keys under a fresh prefix are touched). The
figures are quoted in docs/RELIABILITY.md ("The charge rate limiter").
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
import uuid

LIMIT = 10
PERIOD = 3600  # one window for the whole run: a trial never straddles two


def _setup(redis_url: str, prefix: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django
    from django.conf import settings

    django.setup()
    # The database cache as core/settings.py configures it (whatever REDIS_URL says), plus Redis.
    database_cache = {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "django_cache",
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    }
    redis_cache = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": redis_url,
        "KEY_PREFIX": prefix,
    }
    settings.CACHES = {"default": database_cache, "redis": redis_cache}
    from django.core.cache import caches
    from django.test.signals import setting_changed

    setting_changed.send(sender=None, setting="CACHES", value=settings.CACHES, enter=True)
    caches["default"]  # noqa: B018  (fail early on a misconfigured cache)


def _counter(contender: str):
    """A function bucket -> allowed (bool), counting one request."""
    if contender == "upsert":
        from billing import ratelimit

        return lambda bucket: ratelimit.hit(bucket, limit=LIMIT, period=PERIOD)[0]

    from django.conf import settings
    from django.test import RequestFactory
    from django_ratelimit.core import is_ratelimited

    settings.RATELIMIT_USE_CACHE = "default" if contender == "ratelimit-db" else "redis"
    request = RequestFactory().post("/billing/charge/")

    def count(bucket):
        limited = is_ratelimited(
            request, group="charge", key=lambda group, req: bucket, rate=f"{LIMIT}/{PERIOD}s", increment=True
        )
        return not limited

    return count


def _worker(contender, bucket, attempts, barrier, results):
    from django.db import connections

    connections.close_all()
    count = _counter(contender)
    count(f"warm-up:{uuid.uuid4().hex}")  # open the connections before the start line
    barrier.wait(timeout=60)
    allowed = sum(1 for _ in range(attempts) if count(bucket))
    connections.close_all()
    results.put(allowed)


def concurrent_trials(contender: str, *, processes: int, attempts: int, trials: int) -> list[int]:
    from django.db import connections

    ctx = multiprocessing.get_context("fork")
    allowed_per_trial = []
    for _ in range(trials):
        connections.close_all()
        bucket = f"charge:user:{uuid.uuid4().hex}"
        barrier, results = ctx.Barrier(processes), ctx.Queue()
        workers = [
            ctx.Process(target=_worker, args=(contender, bucket, attempts, barrier, results)) for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        allowed_per_trial.append(sum(results.get(timeout=120) for _ in workers))
        for worker in workers:
            worker.join(timeout=30)
    return allowed_per_trial


def cost_per_request_us(contender: str, *, requests: int) -> float:
    count = _counter(contender)
    buckets = [f"cost:{uuid.uuid4().hex}" for _ in range(requests // LIMIT + 1)]
    for bucket in buckets[:3]:
        count(bucket)
    began = time.perf_counter()
    for i in range(requests):
        count(buckets[i // LIMIT])  # as many first hits as repeats: a user's window, start to limit
    return (time.perf_counter() - began) / requests * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ratelimit_compare", description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--attempts", type=int, default=5, help="per process and trial")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000, help="for the cost per request")
    args = parser.parse_args(argv)

    from bench import database

    url = database.bench_database_url()
    os.environ["DATABASE_URL"] = url
    pg_version = database.recreate(url)
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"rlcompare-{uuid.uuid4().hex}"
    _setup(redis_url, prefix)
    from django.core.cache import caches
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(
        f"PostgreSQL {pg_version}; {args.processes} processes x {args.attempts} attempts at once, "
        f"limit {LIMIT}, {args.trials} trials; cost: {args.requests} requests, one process"
    )
    print("| contender | allowed per trial (limit 10): min / mean / max | trials over the limit | us per request |")
    print("| --- | --- | --- | --- |")
    try:
        for contender, label in (
            ("upsert", "upsert (billing.ratelimit), PostgreSQL"),
            ("ratelimit-db", "django-ratelimit + DatabaseCache, PostgreSQL"),
            ("ratelimit-redis", "django-ratelimit + RedisCache"),
        ):
            allowed = concurrent_trials(contender, processes=args.processes, attempts=args.attempts, trials=args.trials)
            cost = cost_per_request_us(contender, requests=args.requests)
            over = sum(1 for n in allowed if n > LIMIT)
            print(
                f"| {label} | {min(allowed)} / {statistics.mean(allowed):.1f} / {max(allowed)} "
                f"| {over} of {len(allowed)} | {cost:.0f} |",
                flush=True,
            )
    finally:
        redis = caches["redis"]._cache.get_client(None, write=True)
        for key in redis.scan_iter(f"{prefix}:*"):
            redis.delete(key)
        from django.db import connections

        connections.close_all()
        database.drop(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
