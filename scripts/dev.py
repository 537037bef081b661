"""`make run`: set up the database and run the development site.

Beside the site run a task worker (`manage.py db_worker`, billing's background work) and, every
minute, `manage.py billing_periodic`, as a scheduler would in production (docs/INSTALL.md).

On its first run it writes `.env` from `.env.development.example` (DEBUG=1, a fresh SECRET_KEY,
localstripe's keys and address), which core/settings.py reads, so `python manage.py <command>` needs
nothing set by hand either. Variables set in the environment win over the file.

With no STRIPE_SECRET_KEY, or with STRIPE_API_BASE on loopback (the `.env` it writes), localstripe,
the offline Stripe stand-in, starts on loopback next to the site; the site's Stripe API, Stripe.js
and webhook all point at it, and it stops when the site does (Ctrl-C). With real keys set (and no
loopback STRIPE_API_BASE), the site talks to real Stripe and nothing else is started.

Environment: PORT (site, default 8000), LOCALSTRIPE_PORT (default: STRIPE_API_BASE's port, else 8420,
or a free one if taken).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as `python scripts/dev.py`: make `scripts` importable

from core.env import read_dotenv  # noqa: E402
from scripts import localstripe_server  # noqa: E402

DEV_WEBHOOK_SECRET = "whsec_local_dev"  # noqa: S105  (signs localstripe's deliveries on loopback; not a secret)
WEBHOOK_EVENTS = ["payment_intent.succeeded", "payment_intent.payment_failed"]
PERIODIC_EVERY_SECONDS = 60


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


DOTENV_TEMPLATE = ROOT / ".env.development.example"


def write_dotenv_if_missing(path: Path) -> bool:
    """First run: `.env` from the development template, with a SECRET_KEY of its own."""
    if path.exists():
        return False
    text = DOTENV_TEMPLATE.read_text(encoding="utf-8").replace("__generated__", secrets.token_urlsafe(50))
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return True


def uses_localstripe(env: dict[str, str]) -> bool:
    """No Stripe key at all, or a Stripe API on this machine (the development `.env`)."""
    base = urlsplit(env.get("STRIPE_API_BASE", "").strip())
    return not env.get("STRIPE_SECRET_KEY", "").strip() or base.hostname in ("127.0.0.1", "localhost", "::1")


def start_localstripe(env: dict[str, str], site_port: str) -> subprocess.Popen:
    """Start localstripe, point `env` at it and register the site's webhook with it."""
    configured = urlsplit(env.get("STRIPE_API_BASE", "").strip()).port
    wanted = int(env.get("LOCALSTRIPE_PORT") or configured or 8420)
    free = port_is_free(wanted)
    if not free:
        print(f"Port {wanted} is taken: localstripe takes a free one for this run.", file=sys.stderr)
    proc, base = localstripe_server.start(wanted if free else None)
    env["STRIPE_API_BASE"] = base
    env["STRIPE_JS_URL"] = f"{base}/js.stripe.com/v3/"
    # Any sk_/pk_ strings do for localstripe; the webhook secret must match what it signs with.
    env["STRIPE_SECRET_KEY"] = "sk_test_localstripe"  # noqa: S105  (localstripe accepts any sk_ string)
    env["STRIPE_PUBLISHABLE_KEY"] = "pk_test_localstripe"
    env.setdefault("STRIPE_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET)
    localstripe_server.register_webhook(
        base,
        name="dev-site",
        url=f"http://127.0.0.1:{site_port}/billing/webhook/",
        secret=env["STRIPE_WEBHOOK_SECRET"],
        events=WEBHOOK_EVENTS,
    )
    return proc


def banner(site_url: str, stripe_line: str) -> str:
    rule = "-" * 72
    return "\n".join(
        [
            rule,
            f"  Emaily Credits is starting on {site_url}",
            f"  Stripe: {stripe_line}",
            "  Sign up, then add credits with the test card 4242 4242 4242 4242",
            "  (any future date, any CVC). 4000 0000 0000 0341 is declined;",
            "  4000 0025 0000 3155 asks for 3-D Secure. Spend a credit at /fortune/.",
            "  Staff user:  .venv/bin/python manage.py createsuperuser   (settings: .env)",
            "  Sign-up emails are printed here (console email). Stop with Ctrl-C.",
            rule,
        ]
    )


def development_defaults(env: dict, port: str) -> None:
    """What the development site needs unless the environment or `.env` says otherwise: DEBUG,
    no email verification, and links in emails (receipts) to this site on its own port."""
    env.setdefault("DEBUG", "1")
    env.setdefault("ACCOUNT_EMAIL_VERIFICATION", "optional")
    env.setdefault("BILLING_SITE_URL", f"http://127.0.0.1:{port}")


def main() -> int:
    os.chdir(ROOT)
    chosen = os.environ.get("DOTENV_PATH")
    dotenv = None if chosen is not None and not chosen.strip() else Path(chosen or ROOT / ".env")
    if dotenv is not None and write_dotenv_if_missing(dotenv):
        print(f"Wrote {dotenv} (development settings; `python manage.py ...` reads it too).", flush=True)
    # The file's values under the environment's, as core/settings.py reads them.
    env = {**(read_dotenv(dotenv) if dotenv is not None else {}), **os.environ}
    port = env.get("PORT", "8000")
    manage = [sys.executable, str(ROOT / "manage.py")]
    if not port.isdigit() or not port_is_free(int(port)):
        print(
            f"Port {port} is taken (another `make run`?). Stop that one, or choose another: PORT=8001 make run",
            file=sys.stderr,
        )
        return 1
    development_defaults(env, port)

    localstripe = server = worker = None
    stopping = threading.Event()
    if not uses_localstripe(env):
        stripe_line = "real Stripe (STRIPE_SECRET_KEY is set)"
    else:
        localstripe = start_localstripe(env, port)
        stripe_line = f"localstripe at {env['STRIPE_API_BASE']} (no STRIPE_SECRET_KEY set; nothing leaves this machine)"
    try:
        subprocess.run([*manage, "migrate", "--noinput"], check=True, env=env, cwd=ROOT)
        print(banner(f"http://127.0.0.1:{port}/", stripe_line), flush=True)
        # Its own process group, so stopping it also stops the autoreloader's child server.
        server = subprocess.Popen([*manage, "runserver", f"127.0.0.1:{port}"], env=env, cwd=ROOT, process_group=0)
        worker = subprocess.Popen([*manage, "db_worker"], env=env, cwd=ROOT, process_group=0)
        threading.Thread(target=run_periodic, args=(manage, env, stopping), daemon=True).start()
        return server.wait()
    finally:
        stopping.set()
        for process in (server, worker):
            if process is not None:
                stop_server(process)
        if localstripe is not None:
            localstripe_server.stop(localstripe)


def run_periodic(manage: list[str], env: dict[str, str], stopping: threading.Event) -> None:
    """`manage.py billing_periodic` every minute until `stopping` is set: the scheduler's part."""
    while not stopping.is_set():
        subprocess.run([*manage, "billing_periodic", "-v0"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
        stopping.wait(PERIODIC_EVERY_SECONDS)


def stop_server(server: subprocess.Popen) -> None:
    """Stop a server (runserver, the worker) and its autoreloader child (their own process group):
    politely, then not."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if server.poll() is not None:
            return
        try:
            os.killpg(server.pid, signum)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue


if __name__ == "__main__":
    # A plain `kill` cleans up like Ctrl-C does: the `finally` above stops both servers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except subprocess.CalledProcessError as failed:
        sys.exit(failed.returncode)
