"""A loopback HTTP stand-in for Stripe that misbehaves on request: a proxy in front of
localstripe that can hold a PaymentIntent's answer after Stripe has accepted it (slower than the
client's timeout, or until the test has killed something), or a server that answers 500.

It runs in a thread of the scenario process; the scenario flips its mode between requests."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class FaultyStripe:
    """modes:
    - "forward":  pass everything through to localstripe;
    - "error500": answer every request 500 with a Stripe-shaped error body, forwarding nothing;
    - "hold":     forward, but keep the answer to `POST /v1/payment_intents` (the create that
                  charges the card) until `release()` or `hold_seconds`, whichever comes first.
    """

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.mode = "forward"
        self.hold_seconds: float | None = None
        self.forwarded_create = threading.Event()  # Stripe has accepted the held create
        self.answered_create = threading.Event()  # the held answer was written (or the client had gone)
        self._release = threading.Event()
        self.requests = 0
        self.held = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                proxy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.mode == "error500":
                    payload = json.dumps(
                        {"error": {"type": "api_error", "message": "An unknown error occurred (injected 500)."}}
                    ).encode()
                    return self._answer(500, {"Content-Type": "application/json"}, payload)
                status, headers, payload = proxy._forward(self.command, self.path, self.headers, body)
                if proxy.mode == "hold" and self.command == "POST" and self.path.split("?")[0] == "/v1/payment_intents":
                    proxy.held += 1
                    proxy.forwarded_create.set()
                    proxy._release.wait(timeout=proxy.hold_seconds)
                try:
                    self._answer(status, headers, payload)
                finally:
                    if proxy.mode == "hold":
                        proxy.answered_create.set()

            def _answer(self, status, headers, payload):
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (timeout) or was killed

            do_GET = do_POST = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _forward(self, method, path, headers, body):
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection", "content-length")}
            conn.request(method, path, body=body, headers=forwarded)
            response = conn.getresponse()
            payload = response.read()
            keep = {k: v for k, v in response.getheaders() if k.lower() in ("content-type", "request-id")}
            return response.status, keep, payload
        finally:
            conn.close()

    def set_mode(self, mode: str, *, hold_seconds: float | None = None) -> None:
        self.mode = mode
        self.hold_seconds = hold_seconds
        self.forwarded_create.clear()
        self.answered_create.clear()
        self._release.clear()

    def release(self) -> None:
        self._release.set()

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
