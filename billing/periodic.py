"""Billing's periodic jobs and the one way to run them: `manage.py billing_periodic`, called by a
scheduler every minute (cron, a systemd timer, Heroku Scheduler, a Kubernetes CronJob;
docs/INSTALL.md "Background work").

Each call enqueues the jobs that are due (or runs them in its own process with `--now`). A job
is due when its period has passed since it was last enqueued; the command claims it with one
conditional UPDATE of its `PeriodicJob` row, so two calls at once, or two in the same minute,
enqueue it once. Nothing worse would follow from a duplicate (every job is idempotent,
billing.tasks), but the claim keeps a stopped worker from finding a pile of the same job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from billing import tasks
from billing.models import PeriodicJob

logger = logging.getLogger(__name__)

# A scheduler that fires "every minute" is a little early or late: a job is due this much
# before its period has passed, so a run that is a second early does not skip a whole period.
EARLY = timedelta(seconds=10)
NEVER = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Job:
    name: str
    task: object  # a django_tasks Task
    every: timedelta


PERIODIC = (
    # Balances never include expired credits or holds; the sweep makes the ledger say so.
    Job("expire_credits", tasks.expire_credits_task, timedelta(minutes=1)),
    # Asks Stripe about every open payment of the last days: often enough to settle a missed
    # webhook soon, rarely enough not to spend Stripe's rate limit.
    Job("reconcile_payments", tasks.reconcile_payments_task, timedelta(minutes=10)),
    # Webhook events stored but not processed: their task was lost, or a failed one is due for a
    # retry (billing.webhooks.queue). New events wake a task themselves; this is the safety net.
    Job("process_webhook_events", tasks.process_webhook_events_task, timedelta(minutes=1)),
    Job("clean_idempotent_requests", tasks.clean_idempotent_requests_task, timedelta(hours=1)),
    # The rate limit's ended windows: the charge endpoint only counts, it never cleans.
    Job("clean_rate_limit_counters", tasks.clean_rate_limit_counters_task, timedelta(minutes=10)),
    # Payments left waiting for 3-D Secure past BILLING_ABANDONED_AFTER, canceled at Stripe.
    Job("cancel_abandoned_payments", tasks.cancel_abandoned_payments_task, timedelta(minutes=5)),
    # Receipts and refund notices whose enqueue was lost with its process.
    Job("send_overdue_notices", tasks.send_overdue_notices_task, timedelta(minutes=10)),
)


@dataclass(frozen=True)
class Outcome:
    job: Job
    claimed: bool
    result: object = None  # the TaskResult when enqueued, the return value when run with --now
    error: str = ""


def claim(job: Job, *, now: datetime) -> datetime | None:
    """Mark `job` enqueued at `now` if it is due; returns when it was last enqueued before (None if
    not due). Race-free: the row is created once (ignore_conflicts) and claimed by one UPDATE."""
    PeriodicJob.objects.bulk_create([PeriodicJob(name=job.name, last_enqueued_at=NEVER)], ignore_conflicts=True)
    previous = PeriodicJob.objects.filter(name=job.name).values_list("last_enqueued_at", flat=True).first()
    if previous is None or previous > now - job.every + EARLY:
        return None
    won = PeriodicJob.objects.filter(name=job.name, last_enqueued_at=previous).update(last_enqueued_at=now)
    return previous if won else None


def run(*, now_in_process: bool = False, every_job: bool = False, jobs=PERIODIC) -> list[Outcome]:
    """Enqueue each due job (all of them with `every_job`), or run it here with `now_in_process`."""
    outcomes = []
    for job in jobs:
        now = timezone.now()
        previous = claim(job, now=now)
        if previous is None and not every_job:
            outcomes.append(Outcome(job, claimed=False))
            continue
        try:
            result = job.task.call() if now_in_process else job.task.enqueue()
        except Exception as exc:
            # Not enqueued (or failed here): give the claim back so the next call tries again,
            # and go on with the other jobs.
            logger.exception("periodic job %s failed", job.name)
            if previous is not None:
                PeriodicJob.objects.filter(name=job.name, last_enqueued_at=now).update(last_enqueued_at=previous)
            outcomes.append(Outcome(job, claimed=True, error=f"{type(exc).__name__}: {exc}"))
            continue
        outcomes.append(Outcome(job, claimed=True, result=result))
    return outcomes
