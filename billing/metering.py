"""Metered paid actions: reserve up to a limit, charge what the action really used.

    from billing.metering import metered

    with metered(request.user, up_to=10, reason="AI answer") as meter:
        answer = ai.complete(prompt)                              # may take seconds
        meter.charge(math.ceil(answer.usage.total_tokens / 1000))  # 1 credit per 1,000 tokens

On entry the block holds `up_to` credits (`InsufficientCredits` when fewer are available, and
the block does not run). When the block ends normally, what it charged is captured, never more
than `up_to`; the rest is released. When it raises, everything is released and the exception
goes on. No database transaction or row lock is held while the block runs: the hold is
committed before it starts (when no outer transaction is open), so a slow block never blocks
the user's other spending. Inside an outer transaction the hold, the capture and the block's own
writes commit or roll back together. `@metered_view` is the decorator form for views (see
`billing.decorators.credits_required` for fixed prices). docs/INSTALL.md has an example.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from billing import ledger
from billing.ledger.holds import DEFAULT_EXPIRES_IN
from billing.models import Hold, LedgerEntry

logger = logging.getLogger(__name__)


@dataclass
class Meter:
    """What a metered block has used so far. `charge(k)` adds k credits (whole, >= 0)."""

    hold: Hold
    up_to: int
    charged: int = 0
    entry: LedgerEntry | None = field(default=None)  # the capture, once the block ended normally

    def charge(self, credits: int) -> None:
        if not isinstance(credits, int) or isinstance(credits, bool) or credits < 0:
            raise ValueError(f"charge takes a whole number of credits >= 0, got {credits!r}")
        self.charged += credits

    @property
    def captured(self) -> int:
        """What is (or will be) spent: what was charged, never more than `up_to`."""
        return min(self.charged, self.up_to)

    @property
    def exceeded(self) -> bool:
        """The block charged more than it reserved (the excess is not charged)."""
        return self.charged > self.up_to


@contextmanager
def metered(
    user,
    *,
    up_to: int,
    reason: str,
    expires_in: timedelta = DEFAULT_EXPIRES_IN,
    idempotency_key: str | None = None,
):
    """Hold `up_to` credits while the block runs; capture what it charged when it ends normally,
    release everything when it raises. The hold expires after `expires_in` (a block that runs
    longer is still captured if the credits are there)."""
    hold = ledger.hold_credits(user, up_to, reason=reason, expires_in=expires_in, idempotency_key=idempotency_key)
    meter = Meter(hold=hold, up_to=up_to)
    try:
        yield meter
    except BaseException:
        ledger.release_hold(hold)
        raise
    if meter.exceeded:
        logger.warning(
            "%s charged %s credits, more than the %s it held: %s captured", reason, meter.charged, up_to, up_to
        )
    meter.entry = ledger.capture_hold(hold, meter.captured, reason=reason)


def metered_view(up_to: int, *, reason: str | None = None, expires_in: timedelta = DEFAULT_EXPIRES_IN):
    """Decorator form of `metered` for a view: the view receives the meter as `request.meter`
    and charges on it; an answer of 400 or more (or an exception) releases everything. It
    answers as `credits_required` does (billing.decorators.paid_view): signed out, a login
    redirect (401 for JSON); a short balance, 402 (JSON, or a page with Add credits), the view
    never run; an `Idempotency-Key` header, at most once."""
    if not isinstance(up_to, int) or isinstance(up_to, bool) or up_to <= 0:
        raise ValueError("metered_view needs a positive whole number of credits")

    def decorator(view):
        from billing.decorators import paid_view

        wrapper = paid_view(view, amount=up_to, reason=reason, metered=True, expires_in=expires_in)
        wrapper.credits_up_to = up_to
        return wrapper

    return decorator
