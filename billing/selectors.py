"""Reads for the billing pages: each a fixed, small number of queries whatever the ledger's size."""

from django.core.paginator import Paginator

from billing.models import CreditPack, LedgerEntry, Payment


def active_packs():
    return CreditPack.objects.filter(active=True).order_by("amount", "slug")


def ledger_page(user, page_number, *, per_page: int):
    """One page of the user's ledger, newest first (served by the (profile, -id) index)."""
    entries = LedgerEntry.objects.filter(profile__user_id=user.pk).order_by("-id")
    return Paginator(entries, per_page).get_page(page_number)


def recent_payments(user, *, limit: int = 20):
    return list(Payment.objects.filter(user_id=user.pk).select_related("pack").order_by("-created_at", "-id")[:limit])
