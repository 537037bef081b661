"""The only module that imports `stripe`.

Everything the app asks Stripe goes through these functions, which answer with small frozen
dataclasses (never Stripe objects) and turn Stripe's errors into the `billing.exceptions.StripeError`
family, each with a message fit for the user:

- `StripeUnavailable`: Stripe could not be reached or answered with a server error, a rate
  limit or a refusal of our keys. The outcome of a create is then unknown: callers keep the
  payment pending so the webhook or `reconcile_payments` settles it later. Views answer 503.
- `CardDeclined`: the card was refused; `user_message` is the customer's sentence for Stripe's
  code (billing.decline_messages), `stripe_message` Stripe's own words for staff (402).
- `InvalidPaymentRequest`: Stripe rejected the request itself, e.g. an unknown payment method (400).
- `WebhookSignatureError`: a webhook body whose signature, timestamp or JSON does not check out.

Idempotency keys go on every create: Stripe honours them for 24 hours, so a retried request (by
the SDK or by us) never makes a second PaymentIntent or refund. Our own exactly-once guarantees
come from the database, not from these keys.

This module follows Stripe's documented behaviour only. Development and the tests run against
localstripe; what it lacks is taught to it by the project's launcher (scripts/localstripe_server.py),
never accommodated here.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import uuid
from dataclasses import dataclass, field
from enum import StrEnum

import stripe
from django.utils.translation import gettext as _

from billing.conf import app_settings
from billing.decline_messages import customer_message, error_code
from billing.exceptions import (
    BillingError,
    CardDeclined,
    InvalidPaymentRequest,
    StripeUnavailable,
    WebhookSignatureError,
)

logger = logging.getLogger(__name__)

# The Stripe API version this code is written for: every request says it (`Stripe-Version`),
# so Stripe answers in it whatever the account's default, and webhook events in any other
# version are held, not applied (billing.webhooks.store). It is the version the installed SDK
# was generated for (`stripe.api_version`), written out so an SDK upgrade cannot move it
# silently: moving it is a change to review (docs/INSTALL.md, "Stripe API version").
STRIPE_API_VERSION = "2026-10-28.endive"

# Stripe's events nest a handful of levels (an expanded object inside an event's object); far
# deeper is not an event, and would only exhaust the recursion of whatever reads it next.
MAX_EVENT_NESTING = 32


class IntentStatus(StrEnum):
    """A PaymentIntent's `status`, as Stripe documents it; what each means for a payment is
    decided in one place, `billing.fulfilment.apply_intent`."""

    REQUIRES_PAYMENT_METHOD = "requires_payment_method"  # the last attempt failed (or none was made)
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"  # 3-D Secure: the customer must authenticate
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    CANCELED = "canceled"
    SUCCEEDED = "succeeded"


class RefundStatus(StrEnum):
    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


# A refund in one of these states gave the money back to us; it never changes state again.
REFUND_RETURNED = (RefundStatus.FAILED, RefundStatus.CANCELED)


@dataclass(frozen=True)
class Intent:
    """What we need to know about a PaymentIntent."""

    id: str
    status: str  # an IntentStatus value (kept a plain string: Stripe may add statuses)
    amount: int
    currency: str
    client_secret: str | None
    metadata: dict = field(default_factory=dict)
    error_message: str | None = None  # last_payment_error.message, when the last attempt failed
    error_code: str | None = None  # last_payment_error's decline_code or code (billing.decline_messages)
    latest_charge_id: str | None = None
    created: int | None = None  # Unix time
    # The card charged (latest_charge.payment_method_details.card, which every call here expands)
    # or refused (last_payment_error.payment_method.card); blank when Stripe does not say.
    card_brand: str = ""
    card_last4: str = ""


@dataclass(frozen=True)
class Refund:
    id: str
    amount: int
    status: str
    charge_amount_refunded: int | None  # the charge's cumulative refunded amount, when Stripe says


@dataclass(frozen=True)
class Charge:
    """What we need to know about a charge: which PaymentIntent made it (None for a charge made
    through the Charges API or by another system) and every refund made on it, in any status."""

    id: str
    payment_intent: str | None
    amount: int
    amount_refunded: int  # Stripe's cumulative figure: failed and canceled refunds drop out of it
    currency: str
    refunds: tuple[Refund, ...]
    card_brand: str = ""  # payment_method_details.card, when paid by card
    card_last4: str = ""


# --- the client ------------------------------------------------------------------------------


def client() -> stripe.StripeClient:
    """A StripeClient configured from settings (cached per configuration and process)."""
    return _client(
        app_settings.STRIPE_SECRET_KEY,
        app_settings.STRIPE_API_BASE,
        float(app_settings.STRIPE_TIMEOUT_SECONDS),
        int(app_settings.STRIPE_MAX_NETWORK_RETRIES),
        os.getpid(),  # a forked worker must not reuse its parent's connections
    )


def worst_case_seconds(*, timeout: float, retries: int) -> float:
    """The longest one Stripe call can take against a Stripe that accepts connections and never
    answers: every attempt waits out the read timeout, and the SDK sleeps between attempts (its
    exponential backoff from 0.5 s, capped at 5 s, jittered below the cap)."""
    backoff = sum(
        min(stripe.HTTPClient.INITIAL_DELAY * 2 ** (n - 1), stripe.HTTPClient.MAX_DELAY) for n in range(1, retries + 1)
    )
    return (retries + 1) * timeout + backoff


@functools.lru_cache(maxsize=8)
def _client(api_key: str, api_base: str | None, timeout: float, retries: int, pid: int) -> stripe.StripeClient:
    options = {
        "stripe_version": STRIPE_API_VERSION,
        "max_network_retries": retries,
        # (connect, read): fail fast when Stripe is unreachable, wait for a slow answer.
        "http_client": stripe.RequestsClient(timeout=(min(5.0, timeout), timeout)),
    }
    if api_base:
        options["base_addresses"] = {"api": api_base}
    return stripe.StripeClient(api_key, **options)


# --- PaymentIntents --------------------------------------------------------------------------

# Expanded in every answer about an intent, so the card it charged (the charge's
# payment_method_details.card) comes in the same call, not another round trip.
EXPAND_INTENT = ["latest_charge"]


def create_payment_intent(
    *,
    amount: int,
    currency: str,
    payment_method: str,
    metadata: dict,
    idempotency_key: str,
    customer: str | None = None,
    off_session: bool = False,
) -> Intent:
    """Create and confirm a card PaymentIntent in one call (server-side confirmation).

    A saved card is charged with its `customer` (Stripe refuses a customer's card without it);
    `off_session` says the customer is not there to authenticate (auto-recharge), so a bank that
    wants them makes Stripe refuse the charge instead of asking for 3-D Secure.

    Answers the intent (succeeded, requires_action, processing...); raises CardDeclined when the
    card is refused at once (the intent then stays requires_payment_method at Stripe).
    """
    params = {
        "amount": amount,
        "currency": currency,
        "payment_method": payment_method,
        "payment_method_types": ["card"],  # card only: no redirect, so no return_url needed
        "confirm": True,
        "metadata": {key: str(value) for key, value in metadata.items()},
        "expand": EXPAND_INTENT,
    }
    if customer:
        params["customer"] = customer
    if off_session:
        params["off_session"] = True
    with _translated_errors("create payment intent"):
        intent = client().v1.payment_intents.create(params=params, options={"idempotency_key": idempotency_key})
    return _intent(intent)


def create_payment_method_from_token(token: str) -> str:
    """Turn a legacy card token ("tok_...", from Checkout or Stripe.js v2) into a PaymentMethod id,
    the way Stripe documents for moving to PaymentIntents (`card[token]`).

    Stripe lets a token be used once. The idempotency key is this call's own: the SDK's retries
    of it (after a lost answer) get the same PaymentMethod back instead of "token already used",
    while a second request with the same token is refused by Stripe, so it can never pay twice.
    """
    params = {"type": "card", "card": {"token": token}}
    with _translated_errors("create payment method from token"):
        payment_method = client().v1.payment_methods.create(
            params=params, options={"idempotency_key": f"token:{token}:payment-method:{uuid.uuid4().hex}"}
        )
    return payment_method.id


def confirm_payment_intent(intent_id: str, *, idempotency_key: str) -> Intent:
    """Confirm an intent that is waiting for confirmation (after 3-D Secure with manual confirmation)."""
    with _translated_errors("confirm payment intent"):
        intent = client().v1.payment_intents.confirm(
            intent_id, params={"expand": EXPAND_INTENT}, options={"idempotency_key": idempotency_key}
        )
    return _intent(intent)


def cancel_payment_intent(intent_id: str, *, idempotency_key: str) -> Intent:
    """Cancel an intent that can no longer complete (e.g. waiting for a customer who is not there)."""
    with _translated_errors("cancel payment intent"):
        intent = client().v1.payment_intents.cancel(
            intent_id, params={"expand": EXPAND_INTENT}, options={"idempotency_key": idempotency_key}
        )
    return _intent(intent)


def retrieve_payment_intent(intent_id: str) -> Intent:
    with _translated_errors("retrieve payment intent"):
        intent = client().v1.payment_intents.retrieve(intent_id, params={"expand": EXPAND_INTENT})
    return _intent(intent)


def find_payment_intents(*, metadata_key: str, metadata_value: str) -> list[Intent]:
    """PaymentIntents whose metadata[metadata_key] == metadata_value (at most 100), newest first.

    For a payment whose intent id we never learnt (the worker died, or the answer timed out,
    after Stripe accepted the create). Stripe's Search API is eventually consistent: an intent
    created in the last minute may not be found yet, which reconcile treats as "not yet known".
    """
    value = str(metadata_value)
    query = f"metadata['{_search_literal(metadata_key)}']:'{_search_literal(value)}'"
    with _translated_errors("search payment intents"):
        result = client().v1.payment_intents.search(
            params={"query": query, "limit": 100, "expand": [f"data.{path}" for path in EXPAND_INTENT]}
        )
    found = [_intent(pi) for pi in result.data]
    return [i for i in found if i.metadata.get(metadata_key) == value]


# --- customers and saved cards ----------------------------------------------------------------


@dataclass(frozen=True)
class SetupIntent:
    id: str
    status: str  # "succeeded" once the card is set up for later payments
    customer: str | None
    payment_method: str | None
    client_secret: str | None


@dataclass(frozen=True)
class CardDetails:
    """A card PaymentMethod as the page shows it; `customer` is the one it is attached to, if any."""

    id: str
    customer: str | None
    brand: str
    last4: str
    exp_month: int
    exp_year: int


def create_customer(*, email: str, metadata: dict, idempotency_key: str) -> str:
    """Create a Customer and answer its id."""
    params = {"email": email, "metadata": {key: str(value) for key, value in metadata.items()}}
    with _translated_errors("create customer"):
        customer = client().v1.customers.create(params=params, options={"idempotency_key": idempotency_key})
    return customer.id


def create_setup_intent(*, customer: str, metadata: dict, idempotency_key: str) -> SetupIntent:
    """A SetupIntent for saving a card to `customer` for later off-session charges; the page
    confirms it with Stripe.js (`confirmCardSetup`), which runs 3-D Secure if the bank wants it."""
    params = {
        "customer": customer,
        "usage": "off_session",
        "payment_method_types": ["card"],
        "metadata": {key: str(value) for key, value in metadata.items()},
    }
    with _translated_errors("create setup intent"):
        intent = client().v1.setup_intents.create(params=params, options={"idempotency_key": idempotency_key})
    return _setup_intent(intent.to_dict())


def retrieve_setup_intent(setup_intent_id: str) -> SetupIntent:
    with _translated_errors("retrieve setup intent"):
        intent = client().v1.setup_intents.retrieve(setup_intent_id)
    return _setup_intent(intent.to_dict())


def retrieve_card(payment_method_id: str) -> CardDetails:
    with _translated_errors("retrieve payment method"):
        method = client().v1.payment_methods.retrieve(payment_method_id)
    return _card(method.to_dict())


def attach_card(payment_method_id: str, *, customer: str) -> CardDetails:
    """Attach the card to `customer`, so it can be charged later with that customer."""
    with _translated_errors("attach payment method"):
        method = client().v1.payment_methods.attach(payment_method_id, params={"customer": customer})
    return _card(method.to_dict())


def detach_card(payment_method_id: str) -> None:
    """Detach the card from its customer: Stripe will not charge it again."""
    with _translated_errors("detach payment method", quiet=True):
        client().v1.payment_methods.detach(payment_method_id)


# --- refunds ---------------------------------------------------------------------------------


def create_refund(*, intent_id: str, amount: int | None = None, idempotency_key: str) -> Refund:
    """Refund `amount` (minor units; None = whatever is left) of the intent's charge."""
    params = {"payment_intent": intent_id, "expand": ["charge"]}
    if amount is not None:
        params["amount"] = amount
    with _translated_errors("create refund"):
        refund = client().v1.refunds.create(params=params, options={"idempotency_key": idempotency_key})
    return _refund(refund.to_dict())


# --- charges --------------------------------------------------------------------------------


def retrieve_charge(charge_id: str) -> Charge:
    """The charge and all of its refunds (listed in full: a charge shows at most 10 of them).

    Raises InvalidPaymentRequest (http_status 404) when Stripe does not know the charge.
    """
    with _translated_errors("retrieve charge", quiet=True):
        data = client().v1.charges.retrieve(charge_id).to_dict()
        listed = client().v1.refunds.list(params={"charge": charge_id, "limit": 100})
        refunds = tuple(_refund(refund.to_dict()) for refund in listed.auto_paging_iter())
    intent = data.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    return Charge(
        id=data["id"],
        payment_intent=intent if isinstance(intent, str) and intent else None,
        amount=int(data.get("amount") or 0),
        amount_refunded=int(data.get("amount_refunded") or 0),
        currency=str(data.get("currency") or "").lower(),
        refunds=refunds,
        card_brand=charge_card(data)[0],
        card_last4=charge_card(data)[1],
    )


# --- webhooks --------------------------------------------------------------------------------


def construct_event(payload: bytes, sig_header: str) -> dict:
    """Verify a webhook body against its Stripe-Signature header (default 300 s tolerance) and
    return the event as plain JSON data (a dict), fit to be stored."""
    try:
        stripe.WebhookSignature.verify_header(
            payload, sig_header, app_settings.STRIPE_WEBHOOK_SECRET, stripe.Webhook.DEFAULT_TOLERANCE
        )
    except stripe.SignatureVerificationError as exc:
        raise WebhookSignatureError(f"webhook signature: {exc.user_message or exc}", "Invalid signature.") from exc
    try:
        event = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: Python's parser recurses per nesting level and gives up near 1000.
        raise WebhookSignatureError(f"webhook body is not JSON: {type(exc).__name__}", "Invalid payload.") from exc
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise WebhookSignatureError("webhook body is not a Stripe event", "Invalid payload.")
    problem = _unfit(event)
    if problem:
        raise WebhookSignatureError(f"webhook body {problem}", "Invalid payload.")
    return event


def _unfit(event: dict) -> str | None:
    """Why a parsed body cannot be a Stripe event we store, or None. One iterative walk (the
    body may nest deep) checks both:

    - nesting: Stripe's events nest a handful of levels; a body that parses can still be too
      deep to store or serialise again (each of those recurses, from deeper in the stack);
    - contents: PostgreSQL text and jsonb hold neither NUL characters nor lone surrogates, which
      JSON escapes can carry ("\\u0000", "\\ud800"), nor the NaN/Infinity Python's parser accepts.
      Stripe never sends them, so such a body is refused (400) rather than failing, unrecorded,
      inside the database.
    """
    level, depth = [event], 0
    while level:  # one level of nesting at a time: containers only
        depth += 1
        if depth > MAX_EVENT_NESTING:
            return "nests too deep for a Stripe event"
        deeper = []
        for container in level:
            items = (*container.keys(), *container.values()) if type(container) is dict else container
            for value in items:
                kind = type(value)
                if kind is dict or kind is list:
                    deeper.append(value)
                elif kind is str:
                    if "\x00" in value or not (value.isascii() or _encodable(value)):
                        return "holds text no database can store (NUL or a lone surrogate)"
                elif kind is float and not math.isfinite(value):
                    return "holds a number no database can store (NaN or Infinity)"
        level = deeper
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- internals -------------------------------------------------------------------------------


def _refund(data: dict) -> Refund:
    charge = data.get("charge")
    charge_refunded = charge.get("amount_refunded") if isinstance(charge, dict) else None
    return Refund(
        id=data["id"],
        amount=int(data.get("amount") or 0),
        status=str(data.get("status") or ""),
        charge_amount_refunded=int(charge_refunded) if isinstance(charge_refunded, int) else None,
    )


def _id_of(value) -> str | None:
    """An id Stripe may answer as a string or, expanded, as an object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _setup_intent(data: dict) -> SetupIntent:
    return SetupIntent(
        id=data["id"],
        status=str(data.get("status") or ""),
        customer=_id_of(data.get("customer")),
        payment_method=_id_of(data.get("payment_method")),
        client_secret=data.get("client_secret"),
    )


def _card(data: dict) -> CardDetails:
    card = data.get("card") or {}
    return CardDetails(
        id=data["id"],
        customer=_id_of(data.get("customer")),
        brand=str(card.get("brand") or ""),
        last4=str(card.get("last4") or ""),
        exp_month=int(card.get("exp_month") or 0),
        exp_year=int(card.get("exp_year") or 0),
    )


def _intent(obj) -> Intent:
    data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    error = data.get("last_payment_error") or {}
    charge = data.get("latest_charge")
    if isinstance(charge, dict):  # expanded
        charge = charge.get("id")
    metadata = data.get("metadata") or {}
    brand, last4 = intent_card(data)
    return Intent(
        id=data["id"],
        status=str(data.get("status") or ""),
        amount=int(data.get("amount") or 0),
        currency=str(data.get("currency") or "").lower(),
        client_secret=data.get("client_secret"),
        metadata={str(k): str(v) for k, v in metadata.items()},
        error_message=error.get("message") if isinstance(error, dict) else None,
        error_code=error_code(error),
        latest_charge_id=charge if isinstance(charge, str) else None,
        created=data.get("created") if isinstance(data.get("created"), int) else None,
        card_brand=brand,
        card_last4=last4,
    )


def intent_card(data: dict) -> tuple[str, str]:
    """(brand, last4) of the card a PaymentIntent (a dict, as Stripe sends it) charged or tried:
    its expanded latest charge's payment_method_details.card, else its last error's
    payment_method.card, else its expanded payment_method's card; ("", "") when none says."""
    charge = data.get("latest_charge")
    error = data.get("last_payment_error")
    method = data.get("payment_method")
    for source in (
        _dig(charge, "payment_method_details", "card"),
        _dig(error, "payment_method", "card"),
        _dig(method, "card"),
    ):
        found = card_of(source)
        if found[1]:
            return found
    return "", ""


def charge_card(data: dict) -> tuple[str, str]:
    """(brand, last4) of the card a charge (a dict) was paid with."""
    return card_of(_dig(data, "payment_method_details", "card"))


def card_of(card) -> tuple[str, str]:
    """(brand, last4) of a Stripe `card` hash; ("", "") unless last4 is 4 digits."""
    if not isinstance(card, dict):
        return "", ""
    brand, last4 = card.get("brand"), card.get("last4")
    if not (isinstance(last4, str) and len(last4) == 4 and last4.isascii() and last4.isdigit()):
        return "", ""
    brand = brand.lower()[:32] if isinstance(brand, str) else ""
    return brand, last4


def _dig(value, *keys):
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _search_literal(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


class _translated_errors:
    """Turn stripe's exceptions into ours, logging what the user is not shown."""

    def __init__(self, action: str, *, quiet: bool = False):
        self.action = action
        self.quiet = quiet  # the caller handles an InvalidRequestError itself

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or not isinstance(exc, stripe.StripeError):
            return False
        raise _translate(exc, self.action, quiet=self.quiet) from exc


def _translate(exc: stripe.StripeError, action: str, *, quiet: bool = False) -> BillingError:
    error = (exc.json_body or {}).get("error") if isinstance(exc.json_body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = error.get("message") or exc.user_message or str(exc) or _("The payment failed.")
    description = f"{action}: {type(exc).__name__} (HTTP {exc.http_status}): {message}"
    if isinstance(exc, stripe.CardError):
        intent = error.get("payment_intent")
        intent_id = intent.get("id") if isinstance(intent, dict) else intent if isinstance(intent, str) else None
        code = error_code(error) or exc.code
        brand, last4 = card_of(_dig(error, "payment_method", "card"))
        if not last4 and isinstance(intent, dict):
            brand, last4 = intent_card(intent)
        return CardDeclined(
            description,
            customer_message(code),
            intent_id=intent_id,
            code=code,
            stripe_message=message,
            card_brand=brand,
            card_last4=last4,
        )
    if isinstance(exc, stripe.InvalidRequestError) and (exc.http_status or 400) < 500:
        if not quiet:
            logger.warning("stripe rejected a request: %s", description)
        return InvalidPaymentRequest(description, message, http_status=exc.http_status)
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        # Our keys are wrong: the customer cannot fix that, so it reads as "unavailable".
        logger.error("stripe refused our credentials: %s", description)
    else:
        logger.warning("stripe unavailable: %s", description)
    return StripeUnavailable(description)
