"""Run localstripe (the offline Stripe stand-in) on loopback only, from scratch.

`localstripe` itself binds every interface; this binds 127.0.0.1. Used by `make run`, the test
suite and the benchmarks. Development and tests only: production talks to the real Stripe.

    python scripts/localstripe_server.py --port 8420
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import re
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
    parser.add_argument(
        "--api-version",
        default=None,
        help="the API version events are rendered in (default: the one billing pins, as a matching endpoint gets)",
    )
    args = parser.parse_args()
    from aiohttp import web
    from localstripe.resources import store
    from localstripe.server import app  # state starts empty: nothing is loaded from the pickle

    # localstripe writes its whole store to /tmp/localstripe.pickle after every change: each
    # write costs time in proportion to everything created so far (a long test or benchmark run
    # slows down as it goes), and every instance on the machine writes the same file. This
    # launcher never loads it (each run starts empty), so the state stays in memory only.
    store.dump_to_disk = lambda: None
    _events_carry_api_version(args.api_version)
    _cards_have_brands_and_charges_say_which_card()
    app.middlewares.insert(0, web.middleware(_publishable_key_creates_payment_methods))
    app.middlewares.insert(0, web.middleware(_idempotency_keys))
    # Innermost: after localstripe's own error and auth middlewares.
    app.middlewares.append(web.middleware(_payment_method_from_card_token))
    app.middlewares.append(web.middleware(_search_payment_intents))
    app.middlewares.append(web.middleware(_card_errors_name_their_intent))
    app.middlewares.append(web.middleware(_stripe_js_with_adapter))
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


# --- stand-in extension: events in the webhook endpoint's API version -------------------------
# Real Stripe renders every event in an API version and says which in `api_version`: the webhook
# endpoint's version, set when the endpoint is created, else the account's default. localstripe
# 1.15 stamps every event "2017-08-15", a version whose objects it does not render. This stamps
# them with the version billing pins (billing.stripe_gateway.STRIPE_API_VERSION), as a real
# endpoint created with that `api_version` receives them, or with `--api-version`, to see what
# billing does with an endpoint set to another.


def _events_carry_api_version(version: str | None) -> None:
    from localstripe.resources import Event

    if version is None:
        from billing.stripe_gateway import STRIPE_API_VERSION

        version = STRIPE_API_VERSION

    original_init = Event.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.api_version = version

    Event.__init__ = __init__


# --- stand-in extension: card brands, and which card a charge was paid with --------------------
# Stripe documents a charge's `payment_method_details.card` (`brand`, `last4`, `exp_month`,
# `exp_year`, `funding`, `country`): what a receipt shows. localstripe 1.15 leaves it out of its
# charges, calls every card "visa", and knows only some test PaymentMethod ids. This gives each
# card its brand from the number as Stripe names brands (visa, mastercard, amex, discover, diners,
# jcb, unionpay), its charges the card's details, and Stripe's `pm_card_mastercard`,
# `pm_card_amex` test ids.
_BRANDS = (
    (re.compile(r"4"), "visa"),
    (re.compile(r"5[1-5]|2(22[1-9]|2[3-9][0-9]|[3-6][0-9]{2}|7[01][0-9]|720)"), "mastercard"),
    (re.compile(r"3[47]"), "amex"),
    (re.compile(r"6011|64[4-9]|65"), "discover"),
    (re.compile(r"3(0[0-5]|[689])"), "diners"),
    (re.compile(r"35"), "jcb"),
    (re.compile(r"62"), "unionpay"),
)
_TEST_CARDS = {"pm_card_mastercard": "5555555555554444", "pm_card_amex": "378282246310005"}


def card_brand(number: str) -> str:
    return next((brand for prefix, brand in _BRANDS if prefix.match(number)), "unknown")


def _cards_have_brands_and_charges_say_which_card() -> None:
    from localstripe.resources import Charge, PaymentMethod

    original_init = PaymentMethod.__init__

    def __init__(self, *args, **kwargs):
        card = kwargs.get("card")
        number = card.get("number") if isinstance(card, dict) else None
        if isinstance(number, str) and len(number) == 15:  # American Express: localstripe wants 16 digits
            card["number"] = number + "0"
        original_init(self, *args, **kwargs)
        if getattr(self, "type", None) == "card" and isinstance(number, str):
            self._card_number = number
            self.card["last4"] = number[-4:]
            self.card["brand"] = card_brand(number)

    PaymentMethod.__init__ = __init__

    original_canonical = PaymentMethod._try_get_canonical_test_article.__func__

    def _try_get_canonical_test_article(cls, id):
        if id in _TEST_CARDS:
            card = {"number": _TEST_CARDS[id], "exp_month": "12", "exp_year": "2030", "cvc": "123"}
            return PaymentMethod(type="card", card=card)
        return original_canonical(cls, id)

    PaymentMethod._try_get_canonical_test_article = classmethod(_try_get_canonical_test_article)

    original_export = Charge._export

    def _export(self, *args, **kwargs):
        data = original_export(self, *args, **kwargs)
        try:
            method = PaymentMethod._api_retrieve(self.payment_method)
        except Exception:  # a source or card object localstripe keeps elsewhere: no details
            return data
        if getattr(method, "type", None) == "card":
            card = method.card
            data["payment_method_details"] = {
                "type": "card",
                "card": {
                    key: card.get(key) for key in ("brand", "last4", "exp_month", "exp_year", "funding", "country")
                },
            }
        return data

    Charge._export = _export

    # A failed attempt's `last_payment_error.payment_method` is the PaymentMethod tried (Stripe
    # documents it on every error about a payment method); localstripe 1.15 leaves it out.
    from localstripe.errors import UserError
    from localstripe.resources import PaymentIntent

    original_error = PaymentIntent.last_payment_error.fget

    def last_payment_error(self):
        error = original_error(self)
        # (A refused 3-D Secure makes localstripe forget the intent's PaymentMethod: none to name.)
        if isinstance(error, dict) and "payment_method" not in error and isinstance(self.payment_method, str):
            with contextlib.suppress(UserError):  # no PaymentMethod behind it: the error as it was
                error = {**error, "payment_method": PaymentMethod._api_retrieve(self.payment_method)._export()}
        return error

    PaymentIntent.last_payment_error = property(last_payment_error)


# --- stand-in extension: idempotent requests ---------------------------------------------------
# Real Stripe keeps the first answer to a POST sent with an `Idempotency-Key` header (for 24 h)
# and answers a repeat of that key with it, without doing the work again; the same key with other
# parameters is refused (400 idempotency_error), and a repeat while the first is still running
# answers 409. localstripe 1.15 ignores the header, so an SDK retry after a timeout would charge
# twice there. This teaches it the documented behaviour, in memory, for the life of the process.
_idempotent_answers: dict[tuple[str, str], tuple[tuple[str, bytes], int, bytes, str]] = {}
_idempotent_in_flight: set[tuple[str, str]] = set()


async def _idempotency_keys(request, handler):
    from aiohttp import web

    if request.method == "DELETE" and request.path == "/_config/data":
        _idempotent_answers.clear()  # forgetting every object forgets their keys too
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key or request.path.startswith("/_config/"):
        return await handler(request)
    slot = (request.headers.get("Authorization", request.query.get("key", "")), key)
    fingerprint = (request.path, await request.read())
    if slot in _idempotent_answers:
        first, status, body, content_type = _idempotent_answers[slot]
        if first != fingerprint:
            return _idempotency_error(
                400,
                f"Keys for idempotent requests can only be used with the same parameters "
                f"they were first used with. Try using a key other than '{key}'.",
            )
        return web.Response(
            status=status, body=body, content_type=content_type, headers={"Idempotent-Replayed": "true"}
        )
    if slot in _idempotent_in_flight:
        return _idempotency_error(409, "There is currently another in-progress request using this Idempotent Key.")
    _idempotent_in_flight.add(slot)
    try:
        response = await handler(request)  # localstripe's own errors arrive here as responses
    finally:
        _idempotent_in_flight.discard(slot)
    if response.status < 500 and isinstance(response.body, bytes):
        _idempotent_answers[slot] = (fingerprint, response.status, response.body, response.content_type)
    return response


def _idempotency_error(status: int, message: str):
    from aiohttp import web

    return web.json_response({"error": {"type": "idempotency_error", "message": message}}, status=status)


async def _publishable_key_creates_payment_methods(request, handler):
    """Real Stripe lets Stripe.js create a PaymentMethod with the publishable key; localstripe
    1.15 accepts a publishable key only for tokens and sources. The dev-only browser adapter
    (scripts/localstripe_stripejs.js) sends `?key=pk_...`: let that one call through as if it
    carried a secret key (localstripe checks no key's value). The page never sees a secret."""
    if (
        request.method == "POST"
        and request.path == "/v1/payment_methods"
        and "Authorization" not in request.headers
        and request.query.get("key", "").startswith("pk_")
    ):
        request = request.clone(headers={**request.headers, "Authorization": "Bearer sk_localstripe_browser"})
    return await handler(request)


# --- extension: PaymentMethod from a legacy card token -----------------------------------------
# Stripe documents `POST /v1/payment_methods` with `type=card&card[token]=tok_...` for turning a
# legacy Checkout / Stripe.js v2 token into a PaymentMethod; localstripe 1.15 answers 400 (it only
# knows raw card numbers). This creates the PaymentMethod from the token's card, once per token, and
# answers unknown or reused tokens the way Stripe does (400 invalid_request_error).


async def _payment_method_from_card_token(request, handler):
    if request.method != "POST" or request.path != "/v1/payment_methods":
        return await handler(request)
    from localstripe.errors import UserError
    from localstripe.resources import PaymentMethod, store
    from localstripe.server import get_post_data, json_response

    data = await get_post_data(request) or {}
    card = data.get("card")
    if not isinstance(card, dict) or set(card) != {"token"}:
        return await handler(request)
    token_id = card["token"]
    token = store.get(f"token:{token_id}") if isinstance(token_id, str) else None
    if token is None:
        raise UserError(400, f"No such token: '{token_id}'", {"code": "resource_missing", "param": "card[token]"})
    if getattr(token, "_used_by", None):
        raise UserError(
            400, f"You cannot use a Stripe token more than once: {token_id}.", {"code": "token_already_used"}
        )
    extra = {key: value for key, value in data.items() if key in ("billing_details", "metadata")}
    payment_method = PaymentMethod(
        type="card",
        # The token keeps no CVC (Stripe checked it when the token was made); localstripe wants one.
        card={
            "number": token.card._card_number,
            "exp_month": token.card.exp_month,
            "exp_year": token.card.exp_year,
            "cvc": "000",
        },
        **extra,
    )
    token._used_by = payment_method.id
    return json_response(payment_method._export())


# --- stand-in extension: searching PaymentIntents by metadata -----------------------------------
# Stripe documents `GET /v1/payment_intents/search?query=metadata['key']:'value'` (the Search API);
# reconcile_payments uses it to find an intent whose id it never learnt. localstripe 1.15 has no
# Search API (the path reads as an intent id and answers 404). This answers the one query form the
# app sends, exact metadata match, newest first, as a `search_result`; any other query is refused
# the way Stripe refuses a query it cannot parse (400). Real Stripe's search is eventually
# consistent (about a minute behind); this one is immediate.
_METADATA_QUERY = re.compile(r"metadata\['((?:[^'\\]|\\.)+)'\]:'((?:[^'\\]|\\.)*)'")


async def _search_payment_intents(request, handler):
    if request.method != "GET" or request.path != "/v1/payment_intents/search":
        return await handler(request)
    from localstripe.errors import UserError
    from localstripe.resources import PaymentIntent, store
    from localstripe.server import json_response

    query = request.query.get("query", "")
    match = _METADATA_QUERY.fullmatch(query.strip())
    if match is None:
        raise UserError(400, f"Invalid search query: {query!r}", {"param": "query"})
    key, value = (re.sub(r"\\(.)", r"\1", part) for part in match.groups())
    try:
        limit = min(max(int(request.query.get("limit", "10")), 1), 100)
    except ValueError:
        raise UserError(400, "Invalid integer: limit", {"param": "limit"}) from None
    found = [
        obj
        for obj in store.values()
        if isinstance(obj, PaymentIntent) and key in (obj.metadata or {}) and str(obj.metadata[key]) == value
    ]
    found.sort(key=lambda obj: obj.created, reverse=True)
    return json_response(
        {
            "object": "search_result",
            "url": "/v1/payment_intents/search",
            "data": [obj._export(expand=_expand_data(request)) for obj in found[:limit]],
            "has_more": len(found) > limit,
            "next_page": None,
        }
    )


def _expand_data(request) -> list[str]:
    """A search's `expand[]=data.x` as the `x` to expand in each result (as Stripe's lists do)."""
    paths = request.query.getall("expand[]", [])
    return [path.removeprefix("data.") for path in paths if path.startswith("data.")]


# --- stand-in extension: a declined card names its PaymentIntent ---------------------------------
# When confirming a PaymentIntent fails because the card was declined, Stripe answers 402 with a
# `card_error` whose `payment_intent` is the intent (now requires_payment_method), so the caller
# learns which intent the attempt made. localstripe 1.15 answers an `invalid_request_error` naming
# only the charge. This adds the intent (found through the charge) and the error type.
_CONFIRMING = re.compile(r"/v1/payment_intents(/[^/]+/confirm)?")


async def _card_errors_name_their_intent(request, handler):
    from localstripe.errors import UserError
    from localstripe.resources import store

    try:
        return await handler(request)
    except UserError as exc:
        error = exc.body.get("error")
        if exc.code == 402 and request.method == "POST" and _CONFIRMING.fullmatch(request.path) and error:
            charge = store.get(f"charge:{error.get('charge')}")
            intent = store.get(f"payment_intent:{getattr(charge, 'payment_intent', None)}")
            error["type"] = "card_error"
            if intent is not None:
                error["payment_intent"] = intent._export()
                # Stripe's card_error also names the PaymentMethod that was declined.
                if isinstance(intent.last_payment_error, dict) and "payment_method" in intent.last_payment_error:
                    error["payment_method"] = intent.last_payment_error["payment_method"]
        raise


# --- stand-in extension: Stripe.js createPaymentMethod -----------------------------------------
# Real Stripe.js creates a PaymentMethod from its card Element; localstripe 1.15's fake Stripe.js
# has an empty stub. scripts/localstripe_stripejs.js fills it (see its header); it is served
# appended to the fake, so pages load one "Stripe.js" from the stand-in, as from Stripe.
_STRIPE_JS_ADAPTER = pathlib.Path(__file__).with_name("localstripe_stripejs.js")


async def _stripe_js_with_adapter(request, handler):
    response = await handler(request)
    if request.method != "GET" or request.path != "/js.stripe.com/v3/" or response.status != 200:
        return response
    from aiohttp import web

    script = response.text + "\n" + _STRIPE_JS_ADAPTER.read_text()
    return web.Response(text=script, content_type="application/javascript")


# --- helpers for tests and `make run` ----------------------------------------------------------


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
