"""Staff tools in the Django admin, one module per model family; importing this package registers them.

Balances are never edited here: `credits` is read-only everywhere, and the only ways staff change
one are the "Adjust credits" and "Grant credits" forms on a profile, which go through
billing.ledger (an entry with a reason and the staff user as actor). The ledger, grants,
payments, holds, saved cards, auto-recharge settings and Stripe events are read-only (a hold can
be released, an action).

Each changelist keeps to a fixed number of queries whatever the table's size: related rows come
with `list_select_related`, no filter needs a DISTINCT scan, and the full-table count is skipped.
"""

from billing.admin import cards, entries, events, grants, holds, packs, payments, profiles  # noqa: F401  (registers)
from billing.admin.common import (
    ADJUST_PERMISSION,
    GRANT_PERMISSION,
    REFUND_PERMISSION,
    RELEASE_PERMISSION,
    REPROCESS_PERMISSION,
)

__all__ = ["ADJUST_PERMISSION", "GRANT_PERMISSION", "REFUND_PERMISSION", "RELEASE_PERMISSION", "REPROCESS_PERMISSION"]
