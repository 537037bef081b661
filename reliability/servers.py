"""Real processes for the HTTP scenarios: gunicorn app servers on loopback, localstripe, signed-in
"browsers" (a session cookie and a CSRF token, as a browser holds them), and signed webhook
deliveries. Everything binds 127.0.0.1 and is stopped by the scenario that started it."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from reliability.harness import ROOT, log, wait_until
from scripts import localstripe_server
from testbed.signing import stripe_signature

WEBHOOK_SECRET = "whsec_reliability_servers"  # a fixed string for throwaway servers, not a secret
STRIPE_KEY = "sk_test_reliability"
PUBLISHABLE_KEY = "pk_test_reliability"
REQUEST_TIMEOUT = 30  # seconds a client waits for any answer: every request must get one


def free_port() -> int:
    return localstripe_server.free_port()


# --- gunicorn ------------------------------------------------------------------------------------


@dataclass
class AppServer:
    """One gunicorn instance (its own port and workers) on the shared database."""

    name: str
    port: int
    workers: int
    env: dict
    log_path: Path
    proc: subprocess.Popen | None = None
    log_file: object = field(default=None, repr=False)
    timeout: int = 60  # gunicorn's --timeout: a worker busy longer than this is killed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 60) -> AppServer:
        self.log_file = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "core.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--timeout",
                str(self.timeout),
                "--graceful-timeout",
                "5",
                "--access-logfile",
                "-",
                "--error-logfile",
                "-",
                "--access-logformat",
                f"{self.name} %(m)s %(U)s %(s)s %(L)ss pid=%(p)s",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends master and workers
        )

        def answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                return requests.get(f"{self.url}/api/current_user", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(answers, timeout=timeout, interval=0.1, what=f"{self.name} on {self.url}")
        log(f"{self.name} up on {self.url} with {self.workers} workers")
        return self

    def worker_pids(self) -> list[int]:
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return []
        return [int(pid) for pid in children]

    def stop(self) -> None:
        _stop_group(self, grace=15)

    def log_text(self) -> str:
        return _log_text(self.log_path)


@dataclass
class TaskWorker:
    """`manage.py db_worker` (the Procfile's `worker` line) on the scenario's database: acknowledged
    webhook events are processed by it, as in production."""

    name: str
    env: dict
    log_path: Path
    proc: subprocess.Popen | None = None
    log_file: object = field(default=None, repr=False)

    def start(self) -> TaskWorker:
        self.log_file = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "db_worker", "--no-reload", "--interval", "0.2"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log(f"{self.name} (task worker) started")
        return self

    def stop(self) -> None:
        _stop_group(self, grace=30)  # a batch in hand finishes first

    def log_text(self) -> str:
        return _log_text(self.log_path)


def _stop_group(server, *, grace: float) -> None:
    """SIGTERM the process group (master and workers), SIGKILL it after `grace` seconds."""
    if server.proc is not None and server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=10)
    if server.log_file is not None:
        server.log_file.close()
        server.log_file = None


def _log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for_webhook_events(*, timeout: float = 120) -> int:
    """Wait (with a deadline) until no stored webhook event is left for a worker to process;
    returns how many were stored then. Failed events count as done: the verdicts look at them."""
    from django.db import connection

    from billing.models import StripeEvent

    def settled():
        waiting = StripeEvent.objects.filter(status=StripeEvent.Status.RECEIVED).exists()
        connection.close()
        return not waiting

    wait_until(settled, timeout=timeout, interval=0.2, what="the task workers to process the webhook events")
    return StripeEvent.objects.count()


def procfile_timeout() -> int:
    """The web worker timeout the Procfile gives gunicorn (its WEB_TIMEOUT default)."""
    procfile = (ROOT / "Procfile").read_text()
    found = re.search(r"--timeout\s+(?:\$\{WEB_TIMEOUT:-(\d+)\}|(\d+))", procfile)
    if found is None:
        raise RuntimeError("the Procfile's web process sets no gunicorn --timeout")
    return int(found.group(1) or found.group(2))


def server_env(database_url: str, stripe_base: str, **extra: str) -> dict:
    """The environment an app server runs with: production settings (DEBUG off) on the scenario's
    database, pointed at the given Stripe."""
    from django.conf import settings

    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "DOTENV_PATH", "TMPDIR", "PYTHONPATH")}
    env.update(
        DJANGO_SETTINGS_MODULE="reliability.settings",
        # The scenario signs its users' sessions in with this process's key: the servers must share it.
        SECRET_KEY=settings.SECRET_KEY,
        DATABASE_URL=database_url,
        STRIPE_API_BASE=stripe_base,
        STRIPE_JS_URL=f"{stripe_base}/js.stripe.com/v3/",
        STRIPE_SECRET_KEY=STRIPE_KEY,
        STRIPE_PUBLISHABLE_KEY=PUBLISHABLE_KEY,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# --- localstripe -----------------------------------------------------------------------------------


class LocalStripe:
    """A loopback localstripe from scratch, and the few calls a browser or Stripe would make."""

    def __init__(self):
        self.proc, self.base = localstripe_server.start()
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {STRIPE_KEY}"

    def stop(self) -> None:
        localstripe_server.stop(self.proc)

    def card(self, number: str) -> str:
        """A PaymentMethod for a test card, as Stripe.js would create it."""
        response = self.http.post(
            f"{self.base}/v1/payment_methods",
            data={
                "type": "card",
                "card[number]": number,
                "card[exp_month]": 12,
                "card[exp_year]": 2034,
                "card[cvc]": "123",
            },
            timeout=REQUEST_TIMEOUT,
        )
        response.raise_for_status()
        return response.json()["id"]

    def authenticate(self, client_secret: str, *, success: bool = True) -> dict:
        """What Stripe.js's confirmCardPayment does: answer the 3-D Secure challenge."""
        intent_id = client_secret.split("_secret_")[0]
        response = requests.post(
            f"{self.base}/v1/payment_intents/{intent_id}/_authenticate",
            params={"success": "true" if success else "false"},
            data={"key": PUBLISHABLE_KEY, "client_secret": client_secret},
            timeout=REQUEST_TIMEOUT,
        )
        response.raise_for_status()
        return response.json()

    def list_all(self, resource: str) -> list[dict]:
        """Every object of a list endpoint (events, payment_intents), following the pages."""
        out, after = [], None
        while True:
            params = {"limit": 100, **({"starting_after": after} if after else {})}
            response = self.http.get(f"{self.base}/v1/{resource}", params=params, timeout=REQUEST_TIMEOUT)
            response.raise_for_status()
            page = response.json()
            out.extend(page["data"])
            if not page.get("has_more") or not page["data"]:
                return out
            after = page["data"][-1]["id"]


# --- browsers and Stripe's deliveries ------------------------------------------------------------


def signed_in_browsers(emails: list[str]) -> list[Browser]:
    """Users with a session each, made the way a sign-in makes them (in this process's database)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from accounts.models import User

    browsers = []
    for email in emails:
        user = User.objects.create_user(email=email, password=None)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        browsers.append(Browser(user.pk, email, session.session_key))
    return browsers


class Browser:
    """A signed-in user's cookies (session and CSRF) and the JSON calls the page makes."""

    def __init__(self, user_id: int, email: str, session_key: str):
        self.user_id, self.email = user_id, email
        self.csrf = secrets.token_hex(16)  # 32 characters: a valid CSRF secret for the cookie
        self.http = requests.Session()
        self.http.headers["X-CSRFToken"] = self.csrf
        self.http.cookies.set("sessionid", session_key)
        self.http.cookies.set("csrftoken", self.csrf)

    def post_json(self, url: str, body: dict, *, timeout: float = REQUEST_TIMEOUT) -> Answer:
        return call(lambda: self.http.post(url, json=body, timeout=timeout))


@dataclass
class Answer:
    status: int | None  # None: no answer (connection refused, reset or timed out)
    body: object = None
    error: str | None = None
    seconds: float = 0.0


def call(send) -> Answer:
    started = time.perf_counter()
    try:
        response = send()
    except requests.RequestException as exc:
        return Answer(None, error=f"{type(exc).__name__}: {exc}"[:300], seconds=time.perf_counter() - started)
    try:
        body = response.json()
    except ValueError:
        body = response.text[:300]
    return Answer(response.status_code, body, seconds=time.perf_counter() - started)


def deliver(url: str, event: dict, *, secret: str = WEBHOOK_SECRET) -> Answer:
    """POST one event to a webhook URL, signed as Stripe signs it."""
    payload = json.dumps(event).encode()
    headers = {"Content-Type": "application/json", "Stripe-Signature": stripe_signature(payload, secret)}
    return call(
        lambda: requests.post(f"{url}/billing/webhook/", data=payload, headers=headers, timeout=REQUEST_TIMEOUT)
    )


def scan_logs(text: str, secrets_to_find: dict[str, str]) -> dict:
    """Tracebacks and secrets in a server's log."""
    return {
        "tracebacks": text.count("Traceback (most recent call last)"),
        "secrets_found": sorted(name for name, value in secrets_to_find.items() if value and value in text),
        "lines": text.count("\n"),
    }
