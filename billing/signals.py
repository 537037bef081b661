"""Integration signals: billing tells the rest of the project what happened to money and credits.

Each is sent once per event, only after the transaction that recorded it has committed (never for
work that rolled back), with `sender=billing.models.Payment` (or `Profile`), and through
`send_robust`: a receiver that raises is logged and does not undo or fail the payment. A receiver
that does slow work (email, Slack) should hand it to a task queue. docs/INSTALL.md ("Signals") has
the arguments and an example.
"""

from django.db import transaction
from django.dispatch import Signal

# A payment was credited: payment, user, entry (the purchase LedgerEntry), credits (added).
credits_purchased = Signal()
# Stripe refunded more of a payment: payment, user, amount_refunded (cumulative, minor units),
# amount (this refund's part), credits_clawed_back (cumulative, after the clawback).
payment_refunded = Signal()
# A payment was disputed (charge.dispute.created): payment, user, amount_disputed (cumulative).
payment_disputed = Signal()
# A refund or dispute could not take back every credit (already spent): payment, user,
# shortfall (credits not recovered this time), credits_unrecovered (cumulative).
clawback_shortfall = Signal()
# A grant's credits expired, once per expired grant (the sweep: `expire_credits`, or the user's
# next debit), with sender=Profile: user, credits (expired), entry (the `expiry` LedgerEntry),
# grant (the CreditGrant, now empty).
credits_expired = Signal()
# Auto-recharge paused after failing repeatedly (billing.autorecharge): user, payment (the last
# failed one, or None), reason (what the user is told).
auto_recharge_failed = Signal()
# billing's own: a debit (or a hold) took credits from the available balance, sent after its
# commit with sender=Profile: user_id. billing.receivers starts auto-recharge from it.
credits_debited = Signal()


def send_after_commit(signal: Signal, *, sender, using: str | None = None, **kwargs) -> None:
    """Send `signal` once the current transaction commits (at once outside a transaction)."""
    transaction.on_commit(lambda: signal.send_robust(sender=sender, **kwargs), using=using)
