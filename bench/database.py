"""The bench's own PostgreSQL database: named by BENCH_DATABASE_URL, created fresh for each run.

It is dropped and re-created, so the harness refuses any database whose name does not contain
"bench": pointing it at a real database by mistake must not be able to wipe it.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import dj_database_url

from testbed import database as throwaway

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/credits_bench"
PATTERN = "*bench*"


def bench_database_url() -> str:
    """BENCH_DATABASE_URL, else DATABASE_URL's server with a `<name>_bench` database, else the default."""
    explicit = os.environ.get("BENCH_DATABASE_URL", "").strip()
    if explicit:
        url = explicit
    else:
        base = os.environ.get("DATABASE_URL", "").strip()
        if base.startswith(("postgres://", "postgresql://")):
            parts = urlsplit(base)
            name = parts.path.lstrip("/") or "credits"
            url = urlunsplit(parts._replace(path=f"/{name}_bench"))
        else:
            url = DEFAULT_URL
    config = dj_database_url.parse(url)
    if not config["ENGINE"].endswith("postgresql"):
        raise SystemExit(f"the bench needs PostgreSQL; BENCH_DATABASE_URL is {url!r}")
    throwaway.throwaway_name(url, PATTERN)
    return url


def recreate(url: str) -> str:
    """Drop and create the bench database; returns the server's version string."""
    return throwaway.recreate(url, pattern=PATTERN)


def drop(url: str) -> None:
    throwaway.drop(url, pattern=PATTERN)
