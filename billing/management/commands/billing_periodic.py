"""`manage.py billing_periodic [--now] [--all]`: enqueue billing's periodic jobs that are due
(billing.periodic: expire credits and holds every minute, reconcile payments every 10 minutes,
forget old idempotent requests every hour) for the task worker to run.

Call it every minute from a scheduler (docs/INSTALL.md "Background work"). Safe to run twice at
once or twice in a minute: a due job is claimed by one conditional UPDATE, so it is enqueued once,
and every job is idempotent anyway. `--now` runs the due jobs in this process instead (no worker
needed); `--all` takes every job whether due or not. Exits non-zero if a job could not be enqueued
(or, with --now, failed); the others still ran.
"""

from django.core.management.base import BaseCommand, CommandError

from billing import periodic


class Command(BaseCommand):
    help = "Enqueue (or with --now, run) billing's periodic jobs that are due. Call it every minute; safe to overlap."

    def add_arguments(self, parser):
        parser.add_argument("--now", action="store_true", help="run the jobs in this process instead of enqueueing")
        parser.add_argument("--all", action="store_true", help="take every job, due or not")

    def handle(self, *args, now: bool, all: bool, **options):  # noqa: A002  (the option's name)
        outcomes = periodic.run(now_in_process=now, every_job=all)
        for outcome in outcomes:
            name = outcome.job.name
            if outcome.error:
                self.stderr.write(f"{name}: FAILED: {outcome.error}")
            elif not outcome.claimed:
                self.stdout.write(f"{name}: not due")
            elif now:
                self.stdout.write(f"{name}: ran: {outcome.result!r}")
            else:
                self.stdout.write(f"{name}: enqueued ({outcome.result.id}, {outcome.result.status})")
        failed = [outcome.job.name for outcome in outcomes if outcome.error]
        if failed:
            raise CommandError(f"{len(failed)} job(s) failed: {', '.join(failed)}")
