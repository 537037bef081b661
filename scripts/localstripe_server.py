"""Run localstripe (the offline Stripe stand-in) on loopback only, from scratch.

`localstripe` itself binds every interface; this binds 127.0.0.1. Used by `make run`, the test
suite and the benchmarks. Development and tests only: production talks to the real Stripe.

    python scripts/localstripe_server.py --port 8420
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8420)
    args = parser.parse_args()
    from aiohttp import web
    from localstripe.server import app  # state starts empty: nothing is loaded from the pickle

    app.middlewares.insert(0, web.middleware(_publishable_key_creates_payment_methods))
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


async def _publishable_key_creates_payment_methods(request, handler):
    """Real Stripe lets Stripe.js create a PaymentMethod with the publishable key; localstripe
    1.15 accepts a publishable key only for tokens and sources. The dev-only browser adapter
    (billing/static/billing/localstripe-adapter.js) sends `?key=pk_...`: let that one call through as if it
    carried a secret key (localstripe checks no key's value). The page never sees a secret."""
    if (
        request.method == "POST"
        and request.path == "/v1/payment_methods"
        and "Authorization" not in request.headers
        and request.query.get("key", "").startswith("pk_")
    ):
        request = request.clone(headers={**request.headers, "Authorization": "Bearer sk_localstripe_browser"})
    return await handler(request)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(port: int | None = None, *, timeout: float = 20.0, quiet: bool = True) -> tuple[subprocess.Popen, str]:
    """Start localstripe in a child process; return (process, base URL) once it answers."""
    port = port or free_port()
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.localstripe_server", "--port", str(port)], stdout=out, stderr=out
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"localstripe exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(f"{base}/js.stripe.com/v3/", timeout=1).close()
            return proc, base
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"localstripe did not answer on {base} within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def register_webhook(base: str, *, name: str, url: str, secret: str, events: list[str] | None = None) -> None:
    """Ask localstripe to deliver events to `url`, signed with `secret`."""
    fields = [("url", url), ("secret", secret)] + [("events[]", e) for e in events or []]
    request = urllib.request.Request(
        f"{base}/_config/webhooks/{name}", data=urllib.parse.urlencode(fields).encode(), method="POST"
    )
    urllib.request.urlopen(request, timeout=5).close()


def reset(base: str) -> None:
    """Forget every object (webhook registrations are kept)."""
    request = urllib.request.Request(f"{base}/_config/data", method="DELETE")
    urllib.request.urlopen(request, timeout=5).close()


if __name__ == "__main__":
    main()
