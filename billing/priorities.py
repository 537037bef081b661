"""Which background work a busy worker takes first (django-tasks priorities, higher first):
money before mail. A burst of Stripe events must not wait behind the receipts of the payments it
credits. Applied only where the task backend supports priorities; elsewhere tasks run in order.
"""

from __future__ import annotations

WEBHOOK_EVENTS = 10  # crediting what Stripe reported
EMAIL = -10  # receipts and refund notices: minutes late is fine, a credit late is not


def prioritised(task, priority: int):
    """`task` at `priority` when its backend can order by priority, else `task` unchanged."""
    if task.get_backend().supports_priority:
        return task.using(priority=priority)
    return task
