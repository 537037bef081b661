"""Auto-recharge: when a debit leaves the available balance below the user's threshold, buy the
chosen pack with the saved card, off-session (docs/INSTALL.md, "Auto-recharge").

- `configure` saves the settings and the consent wording the user agreed to (`consent_text`).
- A debit sends `billing.signals.credits_debited` after its commit; billing.receivers asks
  `needs_recharge` (a dictionary lookup for users without auto-recharge, no query) and enqueues
  `billing.tasks.auto_recharge_task`, which calls `recharge`.
- `recharge` claims the recharge in one short transaction: the settings row's lock, then a
  pending Payment with purpose auto_recharge (the database allows one in flight per user) and an
  `AutoRechargeAttempt` numbered within the month (the database refuses a number above the
  monthly limit). Only then, outside any transaction, it charges the saved card off-session
  through billing.cards and billing.charges, so the payment is credited once by billing.fulfilment
  and settled by the webhook or reconcile when Stripe's answer is lost (the idempotency key is the
  payment's reference).
- A decline, or a bank that wants the customer present, counts a failure; the third in a row
  pauses auto-recharge and sends `auto_recharge_failed` (billing.receivers emails the user a link
  to fix the card on-session).
"""

from __future__ import annotations

import logging
import time
from datetime import date, datetime, timedelta

from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from billing import cards, charges, fulfilment, ledger, signals, stripe_gateway
from billing.conf import app_settings
from billing.exceptions import (
    BillingError,
    CardDeclined,
    InvalidAutoRecharge,
    InvalidCharge,
    NoSavedCard,
    StripeUnavailable,
)
from billing.models import (
    MAX_AUTO_RECHARGES_PER_MONTH,
    MAX_CREDITS_PER_CHANGE,
    AutoRecharge,
    AutoRechargeAttempt,
    CreditPack,
    Payment,
    Profile,
)
from billing.stripe_gateway import IntentStatus
from billing.templatetags.billing_money import money

logger = logging.getLogger(__name__)

FAILURES_BEFORE_PAUSE = 3
# After a failure the next debit does not retry at once: one gap is not charged again and again.
RETRY_AFTER = timedelta(minutes=30)
# How long a process trusts its copy of who has auto-recharge on (see `needs_recharge`).
ARMED_TTL_SECONDS = 30.0

IN_FLIGHT = (Payment.Status.PENDING, Payment.Status.REQUIRES_ACTION)


class Outcome:
    """What `recharge` did (the task's return value)."""

    OFF = "off"
    PAUSED = "paused"
    NOT_NEEDED = "not_needed"
    IN_FLIGHT = "in_flight"
    MONTHLY_LIMIT = "monthly_limit"
    WAITING = "waiting_to_retry"
    SUCCEEDED = "succeeded"
    PENDING = "pending"  # Stripe's answer not known yet: the webhook or reconcile settles it
    FAILED = "failed"


# --- settings --------------------------------------------------------------------------------


def settings_for(user) -> AutoRecharge | None:
    return AutoRecharge.objects.select_related("pack").filter(profile__user_id=user.pk).first()


def configure(user, *, enabled: bool, pack, threshold, monthly_limit) -> AutoRecharge:
    """Save the user's auto-recharge settings; enabling records the consent wording with these
    values and the time, and lifts a pause. `pack` is a CreditPack or an active pack's slug.

    Raises InvalidAutoRecharge (nothing changed) for a threshold or limit out of range, a pack not
    for sale, or enabling without a saved card."""
    pack = _pack(pack)
    if not _whole(threshold) or not 0 <= threshold <= MAX_CREDITS_PER_CHANGE:
        raise InvalidAutoRecharge(
            f"threshold {threshold!r}",
            _("The threshold must be a whole number of credits from 0 to %(max)s.") % {"max": MAX_CREDITS_PER_CHANGE},
        )
    if not _whole(monthly_limit) or not 1 <= monthly_limit <= MAX_AUTO_RECHARGES_PER_MONTH:
        raise InvalidAutoRecharge(
            f"monthly_limit {monthly_limit!r}",
            _("Allow from 1 to %(max)s recharges a month.") % {"max": MAX_AUTO_RECHARGES_PER_MONTH},
        )
    card = cards.saved_card(user)
    if enabled and card is None:
        raise InvalidAutoRecharge(
            f"user {user.pk} has no saved card", _("Save a card before turning on auto-recharge.")
        )
    profile = Profile.objects.get_or_create(user_id=user.pk)[0]
    with transaction.atomic():
        current = AutoRecharge.objects.select_for_update(of=("self",)).filter(profile=profile).first()
        setting = current or AutoRecharge(profile=profile)
        setting.enabled = bool(enabled)
        setting.pack = pack
        setting.threshold = threshold
        setting.monthly_limit = monthly_limit
        if enabled:
            setting.consent_text = consent_text(card=card, pack=pack, threshold=threshold, monthly_limit=monthly_limit)
            setting.consented_at = timezone.now()
            setting.paused_at = None
            setting.paused_reason = ""
            setting.consecutive_failures = 0
        setting.save()
    forget_armed()
    return setting


def consent_text(*, card, pack: CreditPack, threshold: int, monthly_limit: int) -> str:
    """The sentence the user agrees to, from the real values."""
    card_name = f"{(card.brand or 'card').capitalize()} ending {card.last4}" if card else _("your saved card")
    return _(
        "When your balance falls below %(threshold)s, charge your %(card)s %(price)s for %(credits)s credits, "
        "at most %(limit)s times a month."
    ) % {
        "threshold": threshold,
        "card": card_name,
        "price": money(pack.amount, pack.currency),
        "credits": pack.credits,
        "limit": monthly_limit,
    }


# --- the trigger -----------------------------------------------------------------------------

_armed: dict[int, int] = {}  # user id -> threshold, for users with auto-recharge on and not paused
_armed_read_at: float | None = None


def forget_armed() -> None:
    """Read who has auto-recharge on again at the next debit (after a change in this process)."""
    global _armed_read_at
    _armed_read_at = None


def needs_recharge(user_id: int) -> bool:
    """Whether a debit of `user_id` that just committed should enqueue a recharge.

    The spend path pays a dictionary lookup: each process keeps the ids (and thresholds) of users
    with auto-recharge on, read again at most every ARMED_TTL_SECONDS (one query). Only a user in
    it costs a query (the available balance). A user who turned it on in another process is seen
    within that time; the task re-checks everything, so a stale entry costs an idle task at most.
    """
    global _armed, _armed_read_at
    now = time.monotonic()
    if _armed_read_at is None or now - _armed_read_at > ARMED_TTL_SECONDS:
        _armed = dict(
            AutoRecharge.objects.filter(enabled=True, paused_at__isnull=True).values_list(
                "profile__user_id", "threshold"
            )
        )
        _armed_read_at = now
    threshold = _armed.get(user_id)
    if threshold is None:
        return False
    return ledger.get_balance(_UserRef(user_id)) < threshold


class _UserRef:
    """Just enough of a user for billing.ledger's reads (its primary key)."""

    def __init__(self, pk: int):
        self.pk = pk


# --- the recharge ----------------------------------------------------------------------------


def recharge(user_id: int, *, now: datetime | None = None) -> str:
    """Recharge `user_id` if their settings and balance call for it (an Outcome). Safe to run
    twice or at once: the claim is the database's, so at most one recharge is in flight."""
    now = now or timezone.now()
    claimed = _claim(user_id, now)
    if isinstance(claimed, str):
        return claimed
    payment = claimed
    try:
        result = cards.charge_saved_card(payment, off_session=True)
    except StripeUnavailable:
        logger.warning("auto-recharge payment %s left pending: Stripe's answer was lost", payment.pk)
        return Outcome.PENDING
    except NoSavedCard as no_card:
        # Removed since auto-recharge was turned on: nothing to retry until the user saves one.
        record_failure(payment, reason=no_card.user_message, pause=True)
        return Outcome.FAILED
    except (CardDeclined, BillingError) as refused:
        record_failure(payment, reason=refused.user_message)
        return Outcome.FAILED
    if result.status == IntentStatus.SUCCEEDED:
        record_success(payment)
        return Outcome.SUCCEEDED
    if result.status == IntentStatus.REQUIRES_ACTION:
        # The bank wants the customer, who is not here: this payment cannot go on. It fails here
        # (freeing the slot); the fix-it page lets the user buy on-session with 3-D Secure.
        reason = _("Your bank asked to confirm the payment, which it cannot do without you.")
        payment = fulfilment.fail_payment(payment, message=reason, code="authentication_required")
        _cancel_quietly(payment)
        record_failure(payment, reason=reason)
        return Outcome.FAILED
    return Outcome.PENDING


def _cancel_quietly(payment: Payment) -> None:
    # Nobody can authenticate it now; cancelled, it can never be charged later by surprise.
    try:
        stripe_gateway.cancel_payment_intent(
            payment.stripe_payment_intent_id, idempotency_key=f"payment:{payment.reference}:cancel"
        )
    except BillingError as failed:
        logger.warning(
            "auto-recharge intent %s not cancelled: %s", payment.stripe_payment_intent_id, failed.description
        )


def _claim(user_id: int, now: datetime) -> Payment | str:
    month = date(now.year, now.month, 1)
    with transaction.atomic():
        # The settings row's lock makes recharges of one user take turns deciding.
        setting = (
            AutoRecharge.objects.select_for_update(of=("self",))
            .select_related("pack", "profile")
            .filter(profile__user_id=user_id)
            .first()
        )
        if setting is None or not setting.enabled:
            return Outcome.OFF
        if setting.paused_at is not None:
            return Outcome.PAUSED
        held_back = _held_back(setting, now)
        if held_back:
            return held_back
        used = AutoRechargeAttempt.objects.filter(profile=setting.profile, month=month).count()
        if used >= setting.monthly_limit:
            return Outcome.MONTHLY_LIMIT
        try:
            with transaction.atomic():
                payment = charges.record_payment(
                    setting.profile.user, pack_slug=setting.pack.slug, purpose=Payment.Purpose.AUTO_RECHARGE
                )
                AutoRechargeAttempt.objects.create(
                    profile=setting.profile,
                    month=month,
                    number=used + 1,
                    monthly_limit=setting.monthly_limit,
                    payment=payment,
                )
        except IntegrityError:
            # Another recharge is in flight (one pending auto-recharge payment per user), or took
            # this month's number first: either way the database said no.
            in_flight = Payment.objects.filter(
                user_id=user_id, purpose=Payment.Purpose.AUTO_RECHARGE, status__in=IN_FLIGHT
            )
            if in_flight.exists():
                return Outcome.IN_FLIGHT
            return Outcome.MONTHLY_LIMIT
        except InvalidCharge as gone:
            _pause(setting, reason=gone.user_message, payment=None)
            return Outcome.FAILED
        # The insert may have waited for another recharge's transaction that settled meanwhile:
        # ask again now that it has committed (each statement reads what is committed).
        held_back = _held_back(setting, now, exclude=payment)
        if held_back:
            transaction.set_rollback(True)
            return held_back
    return payment


def _held_back(setting: AutoRecharge, now: datetime, *, exclude: Payment | None = None) -> str | None:
    """Why no recharge is due now (an Outcome), or None: the balance is not below the threshold,
    or the last recharge failed a moment ago (one gap is not charged again and again)."""
    if ledger.get_balance(_UserRef(setting.profile.user_id), now=now) >= setting.threshold:
        return Outcome.NOT_NEEDED
    since = now - RETRY_AFTER
    if setting.consented_at and setting.consented_at > since:
        since = setting.consented_at  # turned on again (the card fixed): no wait
    recent = Payment.objects.filter(
        user_id=setting.profile.user_id,
        purpose=Payment.Purpose.AUTO_RECHARGE,
        status=Payment.Status.FAILED,
        updated_at__gt=since,
    )
    if exclude is not None:
        recent = recent.exclude(pk=exclude.pk)
    return Outcome.WAITING if recent.exists() else None


def record_success(payment: Payment) -> None:
    """An auto-recharge was credited (here or by the webhook): failures start counting again."""
    AutoRecharge.objects.filter(profile__user_id=payment.user_id).exclude(consecutive_failures=0).update(
        consecutive_failures=0
    )


def record_failure(payment: Payment, *, reason: str, pause: bool = False) -> None:
    """Count a failure; the FAILURES_BEFORE_PAUSE-th in a row (or any, with `pause`) pauses auto-recharge."""
    payment = Payment.objects.get(pk=payment.pk)  # as settled, for the signal's receivers
    with transaction.atomic():
        setting = AutoRecharge.objects.select_for_update(of=("self",)).filter(profile__user_id=payment.user_id).first()
        if setting is None:
            return
        setting.consecutive_failures = F("consecutive_failures") + 1
        setting.save(update_fields=["consecutive_failures", "updated_at"])
        setting.refresh_from_db(fields=["consecutive_failures"])
        if (pause or setting.consecutive_failures >= FAILURES_BEFORE_PAUSE) and setting.paused_at is None:
            _pause(setting, reason=reason, payment=payment)


def _pause(setting: AutoRecharge, *, reason: str, payment: Payment | None) -> None:
    setting.paused_at = timezone.now()
    setting.paused_reason = (reason or "")[:500]
    setting.save(update_fields=["paused_at", "paused_reason", "updated_at"])
    forget_armed()
    signals.send_after_commit(
        signals.auto_recharge_failed,
        sender=Payment,
        user=setting.profile.user,
        payment=payment,
        reason=setting.paused_reason,
    )


# --- telling the user ------------------------------------------------------------------------


def fix_url() -> str:
    """Where the user fixes a paused auto-recharge: the billing page's section, where they buy with
    the card on-session (3-D Secure if the bank asks) and turn auto-recharge on again."""
    return f"{app_settings.BILLING_SITE_URL.rstrip('/')}{reverse('billing:index')}#auto-recharge"


def email_paused(user_id: int, *, reason: str) -> int:
    """Email the user that auto-recharge is paused and where to fix it; returns the emails sent."""
    user = Profile.objects.select_related("user").get(user_id=user_id).user
    address = getattr(user, "email", "") or ""
    if not address:
        logger.warning("auto-recharge of user %s paused; no email address to tell them", user_id)
        return 0
    body = _(
        "We tried to top up your credits with your saved card %(count)s times in a row and it did not work:\n"
        "%(reason)s\n\n"
        "Auto-recharge is paused until you fix it. Buy credits with your card there (your bank may ask you to "
        "confirm) and turn auto-recharge on again:\n%(url)s\n"
    ) % {"count": FAILURES_BEFORE_PAUSE, "reason": reason, "url": fix_url()}
    return send_mail(_("Auto-recharge is paused"), body, None, [address])


# --- input -----------------------------------------------------------------------------------


def _pack(value) -> CreditPack:
    if isinstance(value, CreditPack):
        slug = value.slug
    elif isinstance(value, str):
        slug = value
    else:
        raise InvalidAutoRecharge(f"pack {value!r}", _("Choose a pack to buy."))
    found = CreditPack.objects.filter(slug=slug, active=True).first()
    if found is None:
        raise InvalidAutoRecharge(f"no active pack {slug!r}", _("That pack is not for sale."))
    return found


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
