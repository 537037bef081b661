"""Throwaway PostgreSQL databases: created fresh for a run, dropped at its end.

Each harness names the databases it may drop with a pattern (the bench `*bench*`, the reliability
scenarios `rel_*`), so a URL pointing at a real database by mistake cannot wipe it.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import dj_database_url


def conninfo(url: str, dbname: str | None = None) -> dict:
    """psycopg connection keywords for `url` (or for another database `dbname` on its server)."""
    config = dj_database_url.parse(url)
    params = {
        "dbname": dbname or config["NAME"],
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
        "host": config.get("HOST") or None,
        "port": config.get("PORT") or None,
    }
    return {k: v for k, v in params.items() if v}


def admin_connection(url: str):
    """An autocommit connection to the server's `postgres` database (for DROP/CREATE and
    pg_terminate_backend)."""
    import psycopg

    return psycopg.connect(**conninfo(url, "postgres"), autocommit=True)


def throwaway_name(url: str, pattern: str) -> str:
    """The database name in `url`, refused unless it matches `pattern` (the harness's own names)."""
    name = dj_database_url.parse(url)["NAME"]
    if not fnmatchcase(name, pattern):
        raise SystemExit(f"refusing to drop {name!r}: only databases named {pattern} are thrown away here")
    return name


def recreate(url: str, *, pattern: str) -> str:
    """Drop and create the database `url` names; returns the server's version string."""
    from psycopg import sql

    name = throwaway_name(url, pattern)
    with admin_connection(url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return conn.execute("SHOW server_version").fetchone()[0]


def drop(url: str, *, pattern: str) -> None:
    from psycopg import sql

    name = throwaway_name(url, pattern)
    with admin_connection(url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
