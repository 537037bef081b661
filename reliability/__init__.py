"""The reliability and security suite: real processes, real PostgreSQL, real gunicorn, real
localstripe, all on loopback with bounded counts and time.

    python -m reliability --full     # every scenario at full size; rewrites docs/RELIABILITY.md
    python -m reliability --smoke    # the same scenarios at CI size (well under three minutes)

Each scenario is a module with a `run(size) -> dict` that returns its counts and a `passed`
verdict; the runner starts each one in its own process (its own database and settings) and
writes the report. The pytest parts (security, hostile input, append-only) live in tests/ and
run in `make test` too.
"""
