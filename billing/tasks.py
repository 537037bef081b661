"""Billing's background work, run through Django's tasks API (the `django-tasks` backport of
Django 6's `django.tasks`; the backend is the project's TASKS setting, docs/INSTALL.md "Background
work").

Every task here is idempotent and safe when two run at once, because the work underneath is:
`billing.ledger.expire_credits` takes each profile's row lock and finds nothing left on a second
pass; reconcile settles through `billing.fulfilment`, which credits a payment once however many
paths race; the clean-up is one conditional DELETE. So a duplicate (two schedulers, a retried
job, a worker that died mid-task) costs a little work and changes nothing.

Code that enqueues from inside a transaction uses `enqueue_on_commit`: a task must never run
against (or be lost with) a transaction that rolls back, and the ledger's transactions stay short.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_tasks import task

from billing import abandoned, autorecharge, ledger, notices, ratelimit, reconcile
from billing.exceptions import StripeUnavailable
from billing.models import Hold, IdempotentRequest
from billing.webhooks import queue as webhooks_queue

# How long a finished request's answer is kept for a repeat with the same Idempotency-Key.
IDEMPOTENT_REQUEST_KEEP = timedelta(hours=24)
RECONCILE_SINCE_DAYS = 3  # as `manage.py reconcile_payments` by default


def enqueue_on_commit(task_to_run, *args, using: str | None = None, **kwargs) -> None:
    """Enqueue `task_to_run` once the current transaction on `using` commits (at once outside one);
    nothing is enqueued if it rolls back."""
    transaction.on_commit(lambda: task_to_run.enqueue(*args, **kwargs), using=using)


@task()
def expire_credits_task() -> int:
    """Expire due grants (an `expiry` ledger entry each) and due holds; returns the credits expired."""
    return ledger.expire_credits()


@task()
def reconcile_payments_task(since_days: int = RECONCILE_SINCE_DAYS) -> dict[str, int]:
    """What `manage.py reconcile_payments` does (billing.reconcile): ask Stripe about unsettled
    payments, then settle each. Returns how many payments met each action; fails (so the task
    result says so) when Stripe could not be reached or some payment could not be settled."""
    payments = list(reconcile.payments_to_check(since_days=since_days))
    findings, stripe_answered = reconcile.investigate_all(payments)
    if not stripe_answered:
        raise StripeUnavailable(f"Stripe could not be reached; nothing was changed. ({findings[0].note})")
    counts: dict[str, int] = {}
    for finding in findings:
        action = str(reconcile.settle(finding).action)
        counts[action] = counts.get(action, 0) + 1
    if counts.get(reconcile.Action.ERROR):
        raise RuntimeError(f"{counts[reconcile.Action.ERROR]} of {len(findings)} payment(s) could not be reconciled")
    return counts


@task()
def cancel_abandoned_payments_task() -> dict[str, int]:
    """Cancel payments left waiting for 3-D Secure too long (billing.abandoned); idempotent."""
    return abandoned.cancel_abandoned()


@task()
def clean_idempotent_requests_task() -> int:
    """Forget idempotent requests older than a day that finished (their answer was kept) or whose
    hold ended without one (the request died); a request still running keeps its row. Returns the
    rows deleted."""
    now = timezone.now()
    ended = (
        Q(status_code__isnull=False)
        | Q(hold__isnull=True)
        | Q(hold__status__in=[Hold.Status.CAPTURED, Hold.Status.RELEASED, Hold.Status.EXPIRED])
        | Q(hold__expires_at__lte=now)
    )
    deleted, _ = IdempotentRequest.objects.filter(created_at__lt=now - IDEMPOTENT_REQUEST_KEEP).filter(ended).delete()
    return deleted


@task()
def clean_rate_limit_counters_task() -> int:
    """Forget the charge rate limit's counts of windows that have ended (billing.ratelimit).
    Returns the rows deleted."""
    return ratelimit.clear_ended_windows()


@task()
def auto_recharge_task(user_id: int) -> str:
    """Recharge the user if their auto-recharge settings and balance call for it
    (billing.autorecharge.recharge, which the database keeps to one in flight)."""
    return autorecharge.recharge(user_id)


@task()
def auto_recharge_paused_email_task(user_id: int, reason: str) -> int:
    """Tell the user auto-recharge is paused, with a link to fix the card on-session."""
    return autorecharge.email_paused(user_id, reason=reason)


# Defined beside the notices it sends (billing.notices), which enqueues it.
send_payment_notices_task = notices.send_payment_notices_task


@task()
def send_overdue_notices_task() -> int:
    """Send the notices whose enqueue was lost (still unsent minutes after their payment's fact
    committed). Returns the emails sent."""
    return sum(notices.send_payment_notices(payment_id) for payment_id in notices.overdue_payment_ids())


# Defined beside the webhook store it drains (billing.webhooks.queue), which enqueues it; named
# here with the rest of billing's background work.
process_webhook_events_task = webhooks_queue.process_webhook_events_task
