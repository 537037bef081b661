"""Settle payments whose outcome we missed, by asking Stripe (`manage.py reconcile_payments`).

A payment can stay unsettled when the webhook never came, the charge request died after
Stripe accepted it, Stripe's answer timed out, or the customer left during 3-D Secure. This
asks Stripe about each such payment and moves it through `billing.fulfilment`, like every
other path, so a run racing the webhook or the confirm view still credits exactly once.

Two phases: `investigate` only reads (from Stripe and our database) and decides; `settle`
only writes. The command investigates every payment before settling any, so when Stripe
cannot be reached nothing has changed. Each payment stands alone: one that cannot be
investigated or settled is reported as an error and the others are still settled (the command
exits non-zero at the end). Settling is idempotent, so a second run finds nothing left to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from billing import fulfilment, stripe_gateway
from billing.exceptions import BillingError, InvalidPaymentRequest, PaymentMismatch, StripeUnavailable
from billing.fulfilment import Outcome
from billing.models import Payment
from billing.stripe_gateway import IntentStatus

logger = logging.getLogger(__name__)

Status = Payment.Status
# An intent found by metadata is ours only if it was created around or after our payment.
CLOCK_SKEW = timedelta(minutes=5)
# A payment no PaymentIntent names this long after it was created never reached Stripe (the
# request died before Stripe saw it): nothing was charged, so it is closed as failed.
ABANDON_AFTER = timedelta(hours=1)
NEVER_REACHED_STRIPE = "The payment never reached Stripe; no charge was made."


class Action:
    # Applying what the intent says (billing.fulfilment.Outcome); then reconcile's own findings.
    CREDIT = Outcome.CREDIT
    FAIL = Outcome.FAIL
    AWAIT_ACTION = Outcome.AWAIT_ACTION
    ATTACH = Outcome.ATTACH
    NONE = "none"
    UNKNOWN = "unknown"
    ABANDON = "abandon"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    payment: Payment
    action: str
    intent: stripe_gateway.Intent | None
    note: str


def payments_to_check(*, since_days: int):
    """Open payments created within `since_days`, oldest first: pending and requires_action
    ones, and failed ones that have an intent (a failure we recorded may have been followed by
    a success, e.g. after 3-D Secure, whose webhook we missed)."""
    since = timezone.now() - timedelta(days=since_days)
    return (
        Payment.objects.filter(created_at__gte=since)
        .filter(
            Q(status__in=[Status.PENDING, Status.REQUIRES_ACTION])
            | Q(status=Status.FAILED, stripe_payment_intent_id__isnull=False)
        )
        .select_related("pack", "user")
        .order_by("created_at", "id")
    )


def investigate(payment: Payment) -> Finding:
    """What Stripe says about the payment and what should follow. Reads only.

    Raises StripeUnavailable when Stripe cannot be reached; see `investigate_all`.
    """
    if payment.stripe_payment_intent_id:
        try:
            intent = stripe_gateway.retrieve_payment_intent(payment.stripe_payment_intent_id)
        except InvalidPaymentRequest as exc:
            return Finding(payment, Action.ERROR, None, f"Stripe refused to show the intent: {exc.user_message}")
    else:
        intent, note, named = _find_lost_intent(payment)
        if intent is None:
            if not named and payment.created_at < timezone.now() - ABANDON_AFTER:
                return Finding(payment, Action.ABANDON, None, "no PaymentIntent names it after an hour: closing it")
            return Finding(payment, Action.UNKNOWN, None, note)
    return Finding(payment, _decide(payment, intent), intent, f"Stripe says {intent.status}")


# After this many payments in a row that Stripe could not be asked about, Stripe is taken to be
# down and the rest are reported without asking (each would wait out the same timeout).
UNREACHABLE_IN_A_ROW = 3


def investigate_all(payments) -> tuple[list[Finding], bool]:
    """Investigate each payment on its own. Returns (findings, whether Stripe answered at all).

    A payment whose investigation fails, for whatever reason, is an ERROR finding, not the end of the run.
    """
    findings, in_a_row, answered = [], 0, False
    for payment in payments:
        if in_a_row >= UNREACHABLE_IN_A_ROW:
            findings.append(Finding(payment, Action.ERROR, None, "not checked: Stripe could not be reached"))
            continue
        try:
            findings.append(investigate(payment))
            in_a_row, answered = 0, True
        except StripeUnavailable as exc:
            in_a_row += 1
            findings.append(Finding(payment, Action.ERROR, None, f"Stripe could not be reached: {exc.description}"))
        except Exception as exc:
            logger.exception("reconcile: investigating payment %s failed", payment.pk)
            findings.append(Finding(payment, Action.ERROR, None, f"could not be checked: {type(exc).__name__}: {exc}"))
            answered = True
    return findings, answered or not findings


def settle(finding: Finding) -> Finding:
    """Apply a finding through billing.fulfilment; returns what was done (NONE if it already had been)."""
    payment, intent, action = finding.payment, finding.intent, finding.action
    try:
        if action == Action.ABANDON:
            fulfilment.fail_payment(payment, message=NEVER_REACHED_STRIPE)
        elif isinstance(action, Outcome):
            applied = fulfilment.apply_intent(payment, intent, source="reconcile")
            if action == Action.CREDIT and not applied.newly_credited:
                return Finding(payment, Action.NONE, intent, "already credited by another path")
    except PaymentMismatch as exc:
        logger.error("reconcile: %s", exc)
        return Finding(payment, Action.ERROR, intent, f"does not match Stripe: {exc}")
    except Exception as exc:
        # One payment that cannot be settled (the ledger refused its credits, a database error)
        # must not stop the others; fulfilment rolled its own work back.
        logger.exception("reconcile: settling payment %s failed", payment.pk)
        description = exc.description if isinstance(exc, BillingError) else f"{type(exc).__name__}: {exc}"
        return Finding(payment, Action.ERROR, intent, f"could not be settled: {description}")
    return finding


# --- internals -------------------------------------------------------------------------------


def _decide(payment: Payment, intent: stripe_gateway.Intent) -> str:
    """What applying the intent would do to this payment, or NONE when it is already there."""
    outcome = fulfilment.outcome_of(intent)
    needed = {
        Outcome.CREDIT: payment.status in fulfilment.OPEN,
        Outcome.FAIL: payment.status in (Status.PENDING, Status.REQUIRES_ACTION),
        Outcome.AWAIT_ACTION: payment.status == Status.PENDING,
        Outcome.ATTACH: not payment.stripe_payment_intent_id,
    }[outcome]
    return outcome if needed else Action.NONE


def _find_lost_intent(payment: Payment) -> tuple[stripe_gateway.Intent | None, str, bool]:
    """The intent created for a payment whose id we never stored, found by its metadata.

    Returns (intent or None, note, whether any intent named the payment id at all).
    """
    found = stripe_gateway.find_payment_intents(metadata_key="payment_id", metadata_value=str(payment.pk))
    earliest = int((payment.created_at - CLOCK_SKEW).timestamp())
    reference = payment.reference
    ours = [
        intent
        for intent in found
        # Intents made before payment_ref existed carry only payment_id and user_id.
        if intent.metadata.get("payment_ref", reference) == reference
        and intent.metadata.get("user_id") == str(payment.user_id)
        and intent.amount == payment.amount
        and intent.currency == payment.currency
        and (intent.created is None or intent.created >= earliest)
    ]
    if not ours:
        note = "no PaymentIntent at Stripe names this payment (the charge may never have reached Stripe)"
        if found:
            note = f"{len(found)} PaymentIntent(s) name this payment id but not its reference, user, amount or time"
        return None, note, bool(found)
    succeeded = [intent for intent in ours if intent.status == IntentStatus.SUCCEEDED]
    if len(succeeded) > 1:
        logger.error(
            "payment %s: %d succeeded intents (%s): check for a double charge",
            payment.pk,
            len(succeeded),
            ", ".join(i.id for i in succeeded),
        )
    newest_first = sorted(ours, key=lambda i: i.created or 0, reverse=True)
    return (succeeded or newest_first)[0], "", True
