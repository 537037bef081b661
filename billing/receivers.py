"""What billing does when the project's users are saved: every new user gets a profile, and the
sign-up bonus (BILLING_SIGNUP_GRANT, docs/INSTALL.md "Settings") when one is configured. Both are
connected to whatever AUTH_USER_MODEL is."""

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

from billing import autorecharge, notices, signals, tasks
from billing.conf import app_settings, signup_grant
from billing.ledger import grant_credits
from billing.models import Payment, Profile

logger = logging.getLogger(__name__)


@receiver(post_save, sender=app_settings.AUTH_USER_MODEL, dispatch_uid="billing.create_profile")
def create_profile(sender, instance, created, raw=False, **kwargs):
    """Every user has a Profile from the moment it exists (fixtures load their own)."""
    if created and not raw:
        Profile.objects.get_or_create(user=instance)


@receiver(post_save, sender=app_settings.AUTH_USER_MODEL, dispatch_uid="billing.signup_grant")
def give_signup_grant(sender, instance, created, raw=False, using=None, **kwargs):
    """A new user's sign-up bonus, once the user's row has committed (a sign-up that rolls back
    gets nothing). The idempotency key makes it once per user whatever saves or retries follow."""
    if not created or raw:
        return
    bonus = signup_grant()
    if bonus is None:
        return

    def grant():
        expires_at = timezone.now() + timedelta(days=bonus.days) if bonus.days else None
        try:
            grant_credits(
                instance,
                bonus.credits,
                reason="Sign-up bonus",
                expires_at=expires_at,
                idempotency_key=f"signup-grant:{instance.pk}",
            )
        except Exception:
            # The user exists and is signed up: a bonus the ledger refused must not turn that into
            # an error page. Logged for staff, who can give it with `manage.py grant_credits`.
            logger.exception("The sign-up bonus of user %s could not be granted", instance.pk)

    transaction.on_commit(grant, using=using)


@receiver(signals.credits_debited, dispatch_uid="billing.auto_recharge")
def start_auto_recharge(sender, user_id, **kwargs):
    """A committed debit left the balance below the user's auto-recharge threshold: enqueue the
    recharge (the task decides under the database's rules; a spare enqueue does nothing)."""
    if autorecharge.needs_recharge(user_id):
        tasks.auto_recharge_task.enqueue(user_id)


@receiver(signals.auto_recharge_failed, dispatch_uid="billing.auto_recharge_paused_email")
def email_auto_recharge_paused(sender, user, reason, **kwargs):
    tasks.enqueue_on_commit(tasks.auto_recharge_paused_email_task, user.pk, reason)


@receiver(signals.credits_purchased, dispatch_uid="billing.auto_recharge_succeeded")
def auto_recharge_credited(sender, payment, **kwargs):
    """An auto-recharge credited by the webhook or reconcile (its answer was lost) counts as one."""
    if payment.purpose == Payment.Purpose.AUTO_RECHARGE:
        autorecharge.record_success(payment)


@receiver(signals.credits_purchased, dispatch_uid="billing.receipt_email")
def email_receipt(sender, payment, **kwargs):
    """Send the receipt billing.fulfilment recorded with the credit (BILLING_RECEIPT_EMAILS)."""
    if app_settings.BILLING_RECEIPT_EMAILS:
        notices.send_on_commit(payment.pk)


@receiver(signals.payment_refunded, dispatch_uid="billing.refund_email")
def email_refund(sender, payment, **kwargs):
    """Send the notice billing.fulfilment recorded with the refund (BILLING_RECEIPT_EMAILS)."""
    if app_settings.BILLING_RECEIPT_EMAILS:
        notices.send_on_commit(payment.pk)
