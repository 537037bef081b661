"""`manage.py reconcile_payments [--since-days N] [--dry-run]`: settle payments whose outcome we missed.

Asks Stripe about every pending, requires_action, or failed-with-an-intent payment created in
the last N days (default 3), then credits, fails or leaves each one (see billing.reconcile).
Prints one line per payment and a summary. Stripe is asked about every payment before any is
changed, so when Stripe cannot be reached the command stops with a non-zero exit and nothing
changed. A payment that cannot be checked or settled is reported as an error and the others are
still settled; the exit is then non-zero. Safe to re-run: a second run finds nothing left to do.
"""

from django.core.management.base import BaseCommand, CommandError

from billing import reconcile
from billing.management.arguments import whole_number

Action = reconcile.Action
DONE = {
    Action.CREDIT: "credited {credits} credits",
    Action.FAIL: "marked failed",
    Action.AWAIT_ACTION: "marked as waiting for 3-D Secure",
    Action.ATTACH: "intent recorded; Stripe has not decided yet",
    Action.ABANDON: "closed as failed: it never reached Stripe",
}
WOULD = {
    Action.CREDIT: "would credit {credits} credits",
    Action.FAIL: "would mark failed",
    Action.AWAIT_ACTION: "would mark as waiting for 3-D Secure",
    Action.ATTACH: "would record the intent; Stripe has not decided yet",
    Action.ABANDON: "would close as failed: it never reached Stripe",
}
MAX_DAYS = 3650


class Command(BaseCommand):
    help = "Ask Stripe about unsettled payments and credit or fail them. Safe to re-run."

    def add_arguments(self, parser):
        parser.add_argument("--since-days", default="3", help="check payments created in the last N days (default 3)")
        parser.add_argument("--dry-run", action="store_true", help="report what would be done, change nothing")

    def handle(self, *args, since_days: str, dry_run: bool, **options):
        days = whole_number(since_days, name="--since-days", minimum=1, maximum=MAX_DAYS)
        payments = list(reconcile.payments_to_check(since_days=days))
        findings, stripe_answered = reconcile.investigate_all(payments)
        if not stripe_answered:
            raise CommandError(f"Stripe could not be reached; nothing was changed. ({findings[0].note})")

        counts = {}
        for finding in findings:
            if not dry_run:
                finding = reconcile.settle(finding)
            counts[finding.action] = counts.get(finding.action, 0) + 1
            self.stdout.write(self._line(finding, dry_run))

        prefix = "Dry run, nothing changed. " if dry_run else ""
        verb = "would credit" if dry_run else "credited"
        self.stdout.write(
            f"{prefix}Checked {len(findings)} payment(s) from the last {days} day(s): "
            f"{counts.get(Action.CREDIT, 0)} {verb}, "
            f"{counts.get(Action.FAIL, 0) + counts.get(Action.ABANDON, 0)} failed, "
            f"{counts.get(Action.AWAIT_ACTION, 0)} awaiting 3-D Secure, "
            f"{counts.get(Action.ATTACH, 0)} still processing, {counts.get(Action.NONE, 0)} unchanged, "
            f"{counts.get(Action.UNKNOWN, 0)} unknown, {counts.get(Action.ERROR, 0)} error(s)."
        )
        if counts.get(Action.ERROR):
            raise CommandError(f"{counts[Action.ERROR]} payment(s) could not be reconciled; see above.")

    def _line(self, finding: reconcile.Finding, dry_run: bool) -> str:
        payment = finding.payment
        intent = finding.intent.id if finding.intent else payment.stripe_payment_intent_id or "no intent id"
        head = (
            f"payment {payment.pk} ({payment.status}, {intent}, {payment.user.get_username()}, "
            f"{payment.amount} {payment.currency}): "
        )
        template = (WOULD if dry_run else DONE).get(finding.action)
        if template:
            return head + f"{finding.note} -> " + template.format(credits=payment.credits)
        if finding.action == Action.UNKNOWN:
            return head + f"unknown, left as it is: {finding.note}"
        if finding.action == Action.ERROR:
            return head + f"ERROR: {finding.note}"
        return head + f"{finding.note}, nothing to do"
