"""A real task worker for tests that must see background work done the way production does it:
`manage.py db_worker` in its own process, on the test database (committed data, so only in
`transaction=True` tests), stopped with SIGTERM like a deploy stops it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dj_database_url
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


class Worker:
    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.output = ""
        self.returncode: int | None = None

    def wait_for(self, condition: Callable[[], bool], *, timeout: float = 60, what: str = "the task") -> None:
        """Poll `condition` with a deadline, failing early (with the worker's output) if it died."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"the worker did not finish {what} within {timeout:.0f} s"
            assert self.process.poll() is None, f"the worker stopped: {self.process.stdout.read()}"
            time.sleep(0.2)


class running_db_worker:
    """`with running_db_worker(STRIPE_API_BASE=...) as worker:` the worker runs until the block ends."""

    def __init__(self, **environment: str):
        url = dj_database_url.parse(os.environ["DATABASE_URL"])
        database_url = f"postgres://{url['USER']}@{url['HOST']}:{url['PORT']}/{connection.settings_dict['NAME']}"
        self.env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "DOTENV_PATH") if key in os.environ}
        self.env |= {"DEBUG": "1", "DJANGO_SETTINGS_MODULE": "core.settings", "DATABASE_URL": database_url}
        self.env |= environment

    def __enter__(self) -> Worker:
        command = [sys.executable, "manage.py", "db_worker", "--no-reload", "--no-startup-delay", "--interval", "0.2"]
        process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.worker = Worker(process)
        return self.worker

    def __exit__(self, *exc_info) -> None:
        self.worker.process.terminate()
        self.worker.output = self.worker.process.communicate(timeout=30)[0]
        self.worker.returncode = self.worker.process.returncode
