"""Start and stop what the bench needs on loopback: gunicorn serving the site, and localstripe.

Each server is a child process of the harness, waited for with a deadline and stopped (SIGTERM,
then SIGKILL) when its `with` block ends, whatever happened inside it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(proc: subprocess.Popen, url: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{proc.args[:4]} exited with code {proc.returncode}:\n{tail}")
        try:
            urllib.request.urlopen(url, timeout=2).close()  # noqa: S310 - a loopback URL we built
            return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def _process(args: list[str], *, env: dict, ready_url: str, log: Path, timeout: float = 30):
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(proc, ready_url, timeout, log)
        yield proc
    finally:
        _stop(proc)


@contextmanager
def localstripe(log_dir: Path):
    """Yields the base URL of a fresh, in-memory localstripe on 127.0.0.1."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "bench.localstripe_server", "--port", str(port)]
    with _process(args, env=env, ready_url=f"{base}/js.stripe.com/v3/", log=log_dir / "localstripe.log"):
        yield base


@contextmanager
def gunicorn(log_dir: Path, *, workers: int = 4, extra_env: dict | None = None):
    """Yields the base URL of gunicorn serving bench.wsgi (the site plus the baseline view)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "PYTHONPATH": str(ROOT), **(extra_env or {})}
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "bench.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "sync",
        "--timeout",
        "60",
        "--graceful-timeout",
        "10",
        "--log-level",
        "warning",
    ]
    with _process(args, env=env, ready_url=f"{base}/bench/trivial/", log=log_dir / "gunicorn.log", timeout=60):
        yield base


@contextmanager
def db_workers(log_dir: Path, *, count: int = 2, extra_env: dict | None = None):
    """`count` task workers (`manage.py db_worker --no-reload`, as the Procfile's `worker` line runs
    it) under the bench settings, on the bench database, stopped with SIGTERM when the block ends."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "PYTHONPATH": str(ROOT), **(extra_env or {})}
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        with open(log_dir / "db_worker.log", "ab") as out:
            for _ in range(count):
                args = [sys.executable, "manage.py", "db_worker", "--no-reload"]
                procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
        yield procs
    finally:
        for proc in procs:
            _stop(proc)
