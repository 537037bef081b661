"""Which handler runs for which Stripe event type, and what it must be given.

A handler module registers itself at import with `@handles(...)`, as dj-stripe's do, so a new
feature adds its events in its own module without touching the dispatcher
(`billing.webhooks.store`):

    @handles("charge.refunded", wants_charge=_refunded_charge_wants_refunds)
    def _charge_refunded(charge: dict, found: Found) -> None: ...

A handler gets the event's `data.object` and what Stripe said about the event's charge
(`Found`), and ends in `billing.fulfilment`. `wants_charge` names the charge to ask Stripe for
(or None) before the event's transaction starts: no Stripe call runs inside one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from billing import stripe_gateway


class NotOurs(Exception):
    """The event concerns a Stripe object this site did not create: stored as ignored."""


class UnknownPayment(Exception):
    """The event names one of our payments that this database does not have: stored as failed."""


class NoEffect(Exception):
    """The event moves no money (a dispute inquiry, a refund that has not failed): stored as ignored."""


@dataclass(frozen=True)
class Found:
    """What Stripe said about the event's charge, when the event needed asking."""

    charge: stripe_gateway.Charge | None = None
    missing: str = ""  # why there is no charge: Stripe does not know it


Handler = Callable[[dict, Found], None]
ChargeWanted = Callable[[dict], str | None]

HANDLERS: dict[str, Handler] = {}
CHARGE_WANTED: dict[str, ChargeWanted] = {}


def handles(*event_types: str, wants_charge: ChargeWanted | None = None) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of `event_types`."""

    def register(handler: Handler) -> Handler:
        for event_type in event_types:
            # Two handlers for one type would leave which one runs to the order of imports.
            if HANDLERS.get(event_type, handler) is not handler:
                raise ValueError(f"{event_type} already has a handler: {HANDLERS[event_type].__qualname__}")
            HANDLERS[event_type] = handler
            if wants_charge is not None:
                CHARGE_WANTED[event_type] = wants_charge
        return handler

    return register
