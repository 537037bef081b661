"""What every scenario process needs: its own PostgreSQL database, Django set up on it, the
machine it ran on, and a way to hand its result back to the runner as JSON."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from testbed import database
from testbed.database import admin_connection
from testbed.machine import describe

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"
SETTINGS = "reliability.settings"
PATTERN = "rel_*"  # the only databases the harness drops and re-creates


@dataclass(frozen=True)
class Size:
    """How big a run is: `full` for the published figures, `smoke` for CI."""

    name: str

    @property
    def full(self) -> bool:
        return self.name == "full"

    def pick(self, *, smoke, full):
        return full if self.full else smoke


def database_url(name: str) -> str:
    """The URL of the scenario database `name` on the server RELIABILITY_DATABASE_URL or
    DATABASE_URL names (PostgreSQL), else the local default. Names must start with `rel_`:
    the harness drops and re-creates them, so it must not be able to touch anything else."""
    if not name.startswith("rel_"):
        raise SystemExit(f"refusing to use {name!r}: reliability databases are named rel_*")
    base = os.environ.get("RELIABILITY_DATABASE_URL", "").strip() or os.environ.get("DATABASE_URL", "").strip()
    if not base.startswith(("postgres://", "postgresql://")):
        base = DEFAULT_SERVER
    return urlunsplit(urlsplit(base)._replace(path=f"/{name}"))


def setup_django(dbname: str, **env: str) -> str:
    """Point this process at a fresh `dbname`, set Django up on reliability.settings and migrate.
    Extra `env` values are set before the settings load. Returns the database URL."""
    url = database_url(dbname)
    database.recreate(url, pattern=PATTERN)
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    os.environ.update(env)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    return url


def manage(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `manage.py <args>` in a fresh process on this process's database and settings."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def has_command(name: str) -> bool:
    return (ROOT / "billing" / "management" / "commands" / f"{name}.py").exists()


def wait_until(predicate, *, timeout: float, interval: float = 0.05, what: str = "a condition"):
    """Poll `predicate` until it returns something truthy (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- the machine -------------------------------------------------------------------------


def machine(pg_version: str) -> dict[str, str]:
    return describe(pg_version, packages=("Django", "gunicorn", "stripe", "localstripe", "hypothesis"))


def server_version() -> str:
    with admin_connection(database_url("rel_probe")) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


# --- the scenario process's entry point ----------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def scenario_main(run) -> int:
    """`python -m reliability.<scenario> --size smoke|full [--json PATH]`: run, print, exit 0 iff passed."""
    import argparse
    import json

    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=["smoke", "full"], default="smoke")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    started = time.monotonic()
    result = run(Size(args.size))
    result["seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(result, indent=2, default=str)
    if args.json:
        Path(args.json).write_text(text)
    else:
        print(text)
    log(f"{'PASS' if result['passed'] else 'FAIL'} in {result['seconds']} s")
    return 0 if result["passed"] else 1
