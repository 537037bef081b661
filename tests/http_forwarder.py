"""A small HTTP forwarder for tests: every request is passed on to `target` and recorded.

Two uses: between our Stripe gateway and localstripe, to see the exact request the SDK sends; and
as the React development server's proxy (create-react-app's `proxy` setting), which forwards to
the API with the Host rewritten to the target's (`changeOrigin`) and the browser's Origin kept.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict
    body: bytes


class Forwarder:
    def __init__(self, target: str | None = None):
        self.target = target  # e.g. "http://127.0.0.1:8420"; may be set after start()
        self.requests: list[Recorded] = []
        forwarder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                forwarder._forward(self)

            do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Forwarder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        self.requests.append(Recorded(handler.command, handler.path, headers, body))
        target = urlsplit(self.target)
        headers["Host"] = target.netloc  # changeOrigin: the API sees its own host, Origin is the browser's
        headers["X-Forwarded-Host"] = handler.headers.get("Host", "")
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        try:
            connection.request(handler.command, handler.path, body=body or None, headers=headers)
            answer = connection.getresponse()
            content = answer.read()
            handler.send_response(answer.status, answer.reason)
            for name, value in answer.getheaders():  # every Set-Cookie kept, one header each
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(content)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(content)
        finally:
            connection.close()
