"""Reads for the billing pages: each a fixed, small number of queries whatever the ledger's size."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.core.exceptions import ObjectDoesNotExist
from django.db.models import F, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.conf import app_settings
from billing.models import AutoRecharge, CreditGrant, CreditPack, Hold, LedgerEntry, Payment, Profile, SavedCard


def active_packs():
    return CreditPack.objects.filter(active=True).order_by("amount", "slug")


@dataclass(frozen=True)
class LedgerPage:
    """One page of a ledger, newest first, with Django Page's navigation names (no page count)."""

    object_list: list
    number: int
    has_next_page: bool

    def __iter__(self):
        return iter(self.object_list)

    def __len__(self):
        return len(self.object_list)

    def has_next(self) -> bool:
        return self.has_next_page

    def has_previous(self) -> bool:
        return self.number > 1

    def has_other_pages(self) -> bool:
        return self.has_next() or self.has_previous()

    def next_page_number(self) -> int:
        return self.number + 1

    def previous_page_number(self) -> int:
        return self.number - 1


# Past this, a page number is not worth an OFFSET query (and past PostgreSQL's bigint, not possible).
MAX_PAGE_NUMBER = 10**9


def ledger_page(user, page_number, *, per_page: int) -> LedgerPage:
    """One page of the user's ledger, newest first, in ONE query (served by the (profile, -id) index).

    No COUNT: a ledger only grows, and counting a user's entries on every visit would cost more
    the longer they have been a customer. One row past the page tells whether an older page
    exists. A page number that is not a positive number shows the first page; one past the end
    (however large) shows the last page, found with a COUNT only on that rare path.
    """
    entries = LedgerEntry.objects.filter(profile__user_id=user.pk).order_by("-id")
    return _page(entries, page_number, per_page=per_page)


def _page(rows_in_order, page_number, *, per_page: int) -> LedgerPage:
    number = page_number_from(page_number)
    if number <= MAX_PAGE_NUMBER:
        start = (number - 1) * per_page
        rows = list(rows_in_order[start : start + per_page + 1])
        if rows or number == 1:
            return LedgerPage(rows[:per_page], number, len(rows) > per_page)
    last = max(1, -(-rows_in_order.count() // per_page))
    start = (last - 1) * per_page
    return LedgerPage(list(rows_in_order[start : start + per_page]), last, False)


def page_number_from(value) -> int:
    """A page number from a query string: a positive whole number, else 1. Never an error."""
    text = str(value or "").strip()
    if not (text.isascii() and text.isdigit()):
        return 1
    if len(text) > len(str(MAX_PAGE_NUMBER)):  # no int() of a megabyte of digits
        return MAX_PAGE_NUMBER + 1
    return max(1, int(text))


@dataclass(frozen=True)
class PaymentRow:
    """A row of the payment history: one payment, or a run of consecutive failed attempts shown
    as one (`payment` the latest of them, whose reason the row gives), so declines do not bury
    purchases."""

    payment: Payment
    failed_attempts: int = 1

    @property
    def grouped(self) -> bool:
        return self.failed_attempts > 1

    @property
    def open_until(self) -> datetime | None:
        """For a payment still waiting for 3-D Secure: when billing.abandoned cancels it if the
        customer does not finish (the row offers to finish it until then); None otherwise."""
        if self.payment.status != Payment.Status.REQUIRES_ACTION or not self.payment.stripe_payment_intent_id:
            return None
        return self.payment.created_at + timedelta(seconds=int(app_settings.BILLING_ABANDONED_AFTER))


def payments_page(user, page_number, *, per_page: int) -> LedgerPage:
    """One page of the user's payments, newest first, in ONE query as ledger_page (served by the
    (user, -created_at) index), its consecutive failed attempts grouped into one row each
    (within the page: a run cut by a page break shows on both pages)."""
    payments = Payment.objects.filter(user_id=user.pk).select_related("pack").order_by("-created_at", "-id")
    page = _page(payments, page_number, per_page=per_page)
    return LedgerPage(group_failed(page.object_list), page.number, page.has_next_page)


def group_failed(payments) -> list[PaymentRow]:
    rows: list[PaymentRow] = []
    for payment in payments:
        failed = payment.status == Payment.Status.FAILED
        if failed and rows and rows[-1].payment.status == Payment.Status.FAILED:
            rows[-1] = PaymentRow(rows[-1].payment, rows[-1].failed_attempts + 1)
        else:
            rows.append(PaymentRow(payment))
    return rows


@dataclass(frozen=True)
class Expiring:
    """Credits of one category that expire on one day."""

    category: str
    credits: int
    day: date


@dataclass(frozen=True)
class CreditsByCategory:
    """What a user holds, by category, and what of it expires when (soonest first); credits that
    never expire are in the totals only."""

    paid: int
    promotional: int
    expiring: list[Expiring]

    @property
    def total(self) -> int:
        return self.paid + self.promotional


def credits_by_category(user, *, now: datetime | None = None) -> CreditsByCategory:
    """The user's open (unexpired, not used up) grants summed by category and expiry day, in ONE
    query whatever the number of grants. Days are in the current time zone, as the page shows them.
    Grants that expired but were not swept yet are left out, as get_balance leaves them out."""
    now = now or timezone.now()
    rows = (
        CreditGrant.objects.filter(profile__user_id=user.pk, remaining__gt=0)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .values("category", day=TruncDate("expires_at"))
        .annotate(credits=Sum("remaining"))
        .order_by(F("day").asc(nulls_last=True), "category")
    )
    totals = {CreditGrant.Category.PAID: 0, CreditGrant.Category.PROMOTIONAL: 0}
    expiring = []
    for row in rows:
        totals[row["category"]] = totals.get(row["category"], 0) + row["credits"]
        if row["day"] is not None:
            expiring.append(Expiring(row["category"], row["credits"], row["day"]))
    return CreditsByCategory(
        paid=totals[CreditGrant.Category.PAID], promotional=totals[CreditGrant.Category.PROMOTIONAL], expiring=expiring
    )


def active_holds(user, *, now: datetime | None = None, limit: int = 10) -> list[Hold]:
    """The user's holds that still reserve credits (active, not past their expiry), soonest
    expiry first, in ONE query (served by the partial index on active holds). Expired holds not
    swept yet are left out, as get_balance leaves them out."""
    now = now or timezone.now()
    holds = Hold.objects.filter(profile__user_id=user.pk, status=Hold.Status.ACTIVE, expires_at__gt=now)
    return list(holds.order_by("expires_at", "id")[:limit])


def saved_card_and_auto_recharge(user) -> tuple[SavedCard | None, AutoRecharge | None]:
    """The user's saved card and auto-recharge settings (each None when there is none), in one query."""
    # Not the balance: the page reads that once, for the page and the header alike.
    profile = (
        Profile.objects.select_related("saved_card", "auto_recharge")
        .only("id", "saved_card", "auto_recharge")
        .filter(user_id=user.pk)
        .first()
    )
    if profile is None:
        return None, None
    return _related(profile, "saved_card"), _related(profile, "auto_recharge")


def _related(profile: Profile, name: str):
    try:
        return getattr(profile, name)
    except ObjectDoesNotExist:
        return None


RECEIPT_STATUSES = (Payment.Status.SUCCEEDED, Payment.Status.REFUNDED, Payment.Status.DISPUTED)


def receipt_payment(user, reference) -> Payment | None:
    """The user's credited payment named by its reference ("<id>-<created>", Payment.reference);
    None for anything else (another user's, one never credited, a malformed or stale reference)."""
    head, _, tail = str(reference).partition("-")
    if not (head.isascii() and head.isdigit() and tail.isascii() and tail.isdigit()) or len(head) > 18:
        return None
    payment = (
        Payment.objects.select_related("pack")
        .filter(pk=int(head), user_id=user.pk, status__in=RECEIPT_STATUSES)
        .first()
    )
    return payment if payment is not None and payment.reference == reference else None
