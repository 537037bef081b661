from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from billing import selectors
from billing.ledger import get_balance


@login_required
def billing_page(request):
    """Balance, packs to buy, payment history and the ledger (paginated, newest first)."""
    return render(
        request,
        "billing/index.html",
        {
            "balance": get_balance(request.user),
            "packs": selectors.active_packs(),
            "payments": selectors.recent_payments(request.user),
            "ledger": selectors.ledger_page(
                request.user, request.GET.get("page"), per_page=settings.BILLING_LEDGER_PAGE_SIZE
            ),
        },
    )
