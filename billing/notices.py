"""Emails about a payment: the receipt of a purchase and the notice of each refund.

`billing.fulfilment` records a `PaymentNotice` in the transaction that credits or refunds (one
per fact, a unique constraint); `billing.receivers` enqueues `send_payment_notices_task` once that
commits, and `billing_periodic` enqueues it again for any notice still unsent after a few minutes
(an enqueue lost with its process). Sending claims each notice with a conditional UPDATE of
`sent_at`, so a task that runs twice, or two at once, sends each email once. A send that fails
gives the claim back (and the task fails), so the next run tries again.

The texts are templates the project may override: billing/email/receipt_subject.txt,
receipt.txt, receipt.html, and the same for refund_*. Links are absolute from BILLING_SITE_URL
(docs/INSTALL.md "Settings"); times are in the site's TIME_ZONE, named.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import dateformat, timezone
from django_tasks import task

from billing import priorities, stripe_gateway
from billing.conf import app_settings
from billing.exceptions import InvalidPaymentRequest
from billing.models import LedgerEntry, Payment, PaymentNotice
from billing.templatetags.billing_money import money

logger = logging.getLogger(__name__)

# A notice still unsent this long after its fact committed lost its enqueue: send it again.
RESEND_AFTER = timedelta(minutes=5)


# Inside `sent_together`: the payments whose notices are to be sent once the block ends.
_together: ContextVar[list[int] | None] = ContextVar("billing_notices_together", default=None)


def send_on_commit(payment_id: int) -> None:
    """Have the payment's unsent notices sent by a task once the current transaction commits;
    inside `sent_together`, by the one task that block enqueues at its end."""
    collected = _together.get()
    if collected is not None:
        collected.append(payment_id)
        return
    transaction.on_commit(lambda: _enqueue([payment_id]))


@contextmanager
def sent_together():
    """Collect the notices the block's commits owe into one task, enqueued when it ends: a worker
    crediting a batch of Stripe events enqueues one task for their receipts, not one each."""
    collected: list[int] = []
    token = _together.set(collected)
    try:
        yield
    finally:
        _together.reset(token)
        if collected:
            _enqueue(sorted(set(collected)))


def _enqueue(payment_ids: list[int]) -> None:
    priorities.prioritised(send_payment_notices_task, priorities.EMAIL).enqueue(payment_ids)


@task()
def send_payment_notices_task(payment_ids: int | list[int]) -> int:
    """Email the payments' receipts and refund notices not sent yet (each claimed by a
    conditional UPDATE, so a second run sends nothing). Returns the emails sent. (One id is what
    earlier versions enqueued.)"""
    ids = [payment_ids] if isinstance(payment_ids, int) else payment_ids
    return sum(send_payment_notices(payment_id) for payment_id in ids)


def send_payment_notices(payment_id: int) -> int:
    """Send the payment's unsent notices, each claimed first; returns the emails sent."""
    unsent = PaymentNotice.objects.filter(payment_id=payment_id, sent_at__isnull=True)
    unsent = list(unsent.values_list("pk", flat=True))
    if unsent:
        learn_card(payment_id)
    return sum(send_notice(notice_id) for notice_id in unsent)


def learn_card(payment_id: int) -> None:
    """Record the card of a payment credited without knowing it, before its receipt names it.

    A payment credited from a webhook event knows no card: the event's PaymentIntent names its
    charge by id only. Stripe is asked here, in the background, never on the crediting path (the
    intent with its latest charge expanded). Stripe unreachable raises, so the notices stay unsent
    and `billing_periodic` tries again; an intent Stripe does not know leaves the card blank.
    """
    intent_id = (
        Payment.objects.filter(pk=payment_id, card_last4="", stripe_payment_intent_id__isnull=False)
        .values_list("stripe_payment_intent_id", flat=True)
        .first()
    )
    if not intent_id:
        return
    try:
        intent = stripe_gateway.retrieve_payment_intent(intent_id)
    except InvalidPaymentRequest as exc:
        logger.warning(
            "payment %s: Stripe does not know %s (%s); its receipt names no card", payment_id, intent_id, exc
        )
        return
    if intent.card_last4:
        Payment.objects.filter(pk=payment_id, card_last4="").update(
            card_brand=intent.card_brand, card_last4=intent.card_last4, updated_at=timezone.now()
        )


def send_notice(notice_id: int) -> int:
    """Claim the notice (`sent_at` set where it is still null) and send it; 0 when another run
    claimed it first. A failed send releases the claim and raises."""
    claimed_at = timezone.now()
    with transaction.atomic():
        if not PaymentNotice.objects.filter(pk=notice_id, sent_at__isnull=True).update(sent_at=claimed_at):
            return 0
    notice = PaymentNotice.objects.select_related("payment__user", "payment__pack").get(pk=notice_id)
    try:
        return _send(notice)
    except Exception:
        PaymentNotice.objects.filter(pk=notice_id, sent_at=claimed_at).update(sent_at=None)
        raise


def overdue_payment_ids(now: datetime | None = None) -> list[int]:
    """Payments with a notice unsent for longer than RESEND_AFTER (their enqueue was lost)."""
    before = (now or timezone.now()) - RESEND_AFTER
    return list(
        PaymentNotice.objects.filter(sent_at__isnull=True, created_at__lt=before)
        .values_list("payment_id", flat=True)
        .distinct()[:1000]
    )


# --- what the emails say ------------------------------------------------------------------------


def site_url(path: str) -> str:
    """`path` made absolute with BILLING_SITE_URL (left as it is while the setting is empty)."""
    return f"{app_settings.BILLING_SITE_URL.rstrip('/')}{path}"


def seller_name() -> str:
    """BILLING_SELLER_NAME, else the host of BILLING_SITE_URL."""
    return app_settings.BILLING_SELLER_NAME or urlsplit(app_settings.BILLING_SITE_URL).hostname or ""


def when(moment: datetime) -> str:
    """A moment in the site's TIME_ZONE, naming the zone: "5 Dec 2026, 20:14 UTC"."""
    return dateformat.format(timezone.localtime(moment), "j M Y, H:i T")


def amount_text(amount: int, currency: str) -> str:
    """Minor units with the currency named: "$5.00 USD", "500 JPY"."""
    text = money(amount, currency)
    code = (currency or "").upper()
    return text if text.endswith(code) else f"{text} {code}"


def credited_at(payment: Payment) -> datetime:
    """When the payment was credited (its purchase entry), else when it was made."""
    entry = LedgerEntry.objects.filter(payment=payment, kind=LedgerEntry.Kind.PURCHASE).only("created_at").first()
    return entry.created_at if entry is not None else payment.created_at


def receipt_context(payment: Payment) -> dict:
    """What a receipt shows, for the email and the receipt page alike."""
    return {
        "payment": payment,
        "seller": seller_name(),
        "reference": payment.reference,
        "pack_name": payment.pack.name,
        "credits": payment.credits,
        "amount": amount_text(payment.amount, payment.currency),
        "amount_refunded": amount_text(payment.amount_refunded, payment.currency) if payment.amount_refunded else "",
        "card": payment.card_label,
        "paid_at": when(credited_at(payment)),
        "status": payment.get_status_display(),
        "billing_url": site_url(reverse("billing:index")),
        "receipt_url": site_url(reverse("billing:receipt", args=[payment.reference])),
    }


def _send(notice: PaymentNotice) -> int:
    payment = notice.payment
    address = getattr(payment.user, "email", "") or ""
    if not address:
        logger.warning("payment %s: no email address for its %s", payment.pk, notice.kind)
        return 0
    context = receipt_context(payment)
    if notice.kind == PaymentNotice.Kind.REFUND:
        context |= {
            "refund_amount": amount_text(notice.amount, payment.currency),
            "refunded_at": when(notice.created_at),
        }
    name = "receipt" if notice.kind == PaymentNotice.Kind.RECEIPT else "refund"
    subject = " ".join(render_to_string(f"billing/email/{name}_subject.txt", context).split())
    text = render_to_string(f"billing/email/{name}.txt", context)
    html = render_to_string(f"billing/email/{name}.html", context)
    message = EmailMultiAlternatives(subject, text, None, [address])
    message.attach_alternative(html, "text/html")
    return message.send()
