"""The bench's own PostgreSQL database: named by BENCH_DATABASE_URL, created fresh for each run.

It is dropped and re-created, so the harness refuses any database whose name does not contain
"bench": pointing it at a real database by mistake must not be able to wipe it.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
import psycopg
from psycopg import sql

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/credits_bench"


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
    if "bench" not in config["NAME"]:
        raise SystemExit(f"refusing to drop and re-create {config['NAME']!r}: a bench database name contains 'bench'")
    return url


def conninfo(url: str, dbname: str | None = None) -> dict:
    config = dj_database_url.parse(url)
    params = {
        "dbname": dbname or config["NAME"],
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
        "host": config.get("HOST") or None,
        "port": config.get("PORT") or None,
    }
    return {k: v for k, v in params.items() if v}


def recreate(url: str) -> str:
    """Drop and create the bench database; returns the server's version string."""
    name = dj_database_url.parse(url)["NAME"]
    with psycopg.connect(**conninfo(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return conn.execute("SHOW server_version").fetchone()[0]


def drop(url: str) -> None:
    name = dj_database_url.parse(url)["NAME"]
    with psycopg.connect(**conninfo(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
