"""Billing data: balances, the packs for sale, payments, the append-only ledger, Stripe events.

Money is integer minor units (cents) and credits are integers; the database refuses what must
never happen (a negative balance, a zero ledger delta, a second row for a unique key).
"""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.conf import app_settings
from billing.decline_messages import customer_message
from billing.exceptions import AppendOnlyViolation
from billing.templatetags.billing_money import money

# The ledger's limits, which every layer that accepts a number of credits or an amount checks
# against, so that nothing one layer accepts is refused by the next (docs/DESIGN.md, "Limits").
# No single ledger change is bigger than MAX_CREDITS_PER_CHANGE: a larger number is a typo (or an
# attack), never a purchase. Balances are 64-bit, so no realistic sum of changes overflows.
MAX_CREDITS_PER_CHANGE = 1_000_000_000
# Credits valid for longer than this (100 years) are a typo; staff forms and commands refuse it.
MAX_VALIDITY_DAYS = 36_500
# Stripe's largest charge is 8 digits of minor units (99,999,999: $999,999.99 for USD).
MAX_AMOUNT = 99_999_999
# Auto-recharges a user may allow per calendar month (about one a day).
MAX_AUTO_RECHARGES_PER_MONTH = 31
# What staff read when a pack breaks a limit, from the form's validators and the database's constraints alike.
PACK_CREDITS_MIN = "A pack must give at least 1 credit."
PACK_CREDITS_MAX = f"A pack can add at most {MAX_CREDITS_PER_CHANGE:,} credits."
PACK_PRICE_MIN = "The price must be at least 50 (Stripe's minimum charge)."
PACK_PRICE_MAX = f"The price can be at most {MAX_AMOUNT:,} (Stripe's largest charge)."


class Profile(models.Model):
    """A user's balance. Invariant: credits == sum of its ledger deltas, and never below zero.

    Only billing.ledger writes `credits`.
    """

    user = models.OneToOneField(app_settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    credits = models.BigIntegerField(default=0, editable=False)
    # No open grant of this profile expires before this (null: none expires). May be earlier than
    # the true next expiry (the grant was used up since): only a hint that lets reads skip the
    # grants until something could have expired. Written by billing.ledger only.
    next_expiry = models.DateTimeField(null=True, blank=True, editable=False)
    # Credits reserved by active holds: what can be spent now is credits - held. Expired holds
    # count until swept; `next_hold_expiry` (no active hold expires before it) says when to sweep.
    held = models.BigIntegerField(default=0, db_default=0, editable=False)
    next_hold_expiry = models.DateTimeField(null=True, blank=True, editable=False)
    stripe_customer_id = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(credits__gte=0),
                name="billing_profile_credits_gte_0",
                violation_error_message="A balance cannot go below zero credits.",
            ),
            models.CheckConstraint(condition=Q(held__gte=0), name="billing_profile_held_gte_0"),
        ]
        permissions = [
            ("adjust_credits", "Can adjust a user's credits"),
            ("grant_credits", "Can grant credits (promotional or paid, with an expiry)"),
        ]

    def __str__(self):
        return f"{self.user} ({self.credits} credits)"


class SavedCard(models.Model):
    """A card saved at Stripe (attached to the profile's Customer) for one-click and off-session
    purchases. Invariant: at most one per profile (the one-to-one), and one row per Stripe card.

    Written by billing.cards only; the brand, last 4 and expiry are Stripe's, for the page."""

    profile = models.OneToOneField(Profile, on_delete=models.CASCADE, related_name="saved_card")
    stripe_payment_method_id = models.CharField(max_length=255, unique=True)
    brand = models.CharField(max_length=32, blank=True)
    last4 = models.CharField(max_length=4)
    exp_month = models.PositiveSmallIntegerField()
    exp_year = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(exp_month__gte=1) & Q(exp_month__lte=12), name="billing_savedcard_exp_month_1_12"
            ),
        ]

    def __str__(self):
        return f"{self.brand or 'card'} •••• {self.last4} ({self.exp_month:02d}/{self.exp_year})"


class AutoRecharge(models.Model):
    """A profile's auto-recharge: when a debit leaves the available balance below `threshold`,
    buy `pack` with the saved card, at most `monthly_limit` times a calendar month.

    Written by billing.autorecharge only. `consent_text` is the wording the user agreed to, with
    the values of that moment; `paused_at` is set after repeated failures until the user fixes it."""

    profile = models.OneToOneField(Profile, on_delete=models.CASCADE, related_name="auto_recharge")
    enabled = models.BooleanField(default=False)
    pack = models.ForeignKey("CreditPack", on_delete=models.PROTECT, related_name="+")
    threshold = models.PositiveIntegerField()
    monthly_limit = models.PositiveSmallIntegerField()
    consecutive_failures = models.PositiveSmallIntegerField(default=0)
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_reason = models.CharField(max_length=500, blank=True, default="")
    consent_text = models.CharField(max_length=500, blank=True, default="")
    consented_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(monthly_limit__gte=1) & Q(monthly_limit__lte=MAX_AUTO_RECHARGES_PER_MONTH),
                name="billing_autorecharge_monthly_limit_range",
            ),
            models.CheckConstraint(
                condition=Q(threshold__lte=MAX_CREDITS_PER_CHANGE), name="billing_autorecharge_threshold_lte_max"
            ),
        ]

    def __str__(self):
        state = "paused" if self.paused_at else "on" if self.enabled else "off"
        return f"Auto-recharge of {self.profile_id} ({state})"


class AutoRechargeAttempt(models.Model):
    """One auto-recharge charged in a calendar month: the `number`-th of `month` (its first day).
    The database keeps the monthly limit: numbers are unique per profile and month and never
    above the limit copied from the settings when the attempt was claimed."""

    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="auto_recharge_attempts")
    month = models.DateField()
    number = models.PositiveSmallIntegerField()
    monthly_limit = models.PositiveSmallIntegerField()
    payment = models.OneToOneField("Payment", on_delete=models.PROTECT, related_name="auto_recharge_attempt")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["profile", "month", "number"], name="billing_autorechargeattempt_one_per_number"
            ),
            models.CheckConstraint(
                condition=Q(number__gte=1) & Q(number__lte=models.F("monthly_limit")),
                name="billing_autorechargeattempt_within_limit",
            ),
        ]

    def __str__(self):
        return f"Auto-recharge {self.number}/{self.monthly_limit} of {self.month:%Y-%m} ({self.profile_id})"


class CreditPack(models.Model):
    """Something for sale: `credits` for `amount` minor units of `currency`. The server's price is the only price."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    credits = models.PositiveIntegerField(
        validators=[
            MinValueValidator(1, message=PACK_CREDITS_MIN),
            MaxValueValidator(MAX_CREDITS_PER_CHANGE, message=PACK_CREDITS_MAX),
        ],
        help_text=f"Credits the pack adds, from 1 to {MAX_CREDITS_PER_CHANGE:,}.",
    )
    amount = models.PositiveIntegerField(
        validators=[
            MinValueValidator(50, message=PACK_PRICE_MIN),
            MaxValueValidator(MAX_AMOUNT, message=PACK_PRICE_MAX),
        ],
        help_text=f"Price in minor units of the currency, e.g. cents: from 50 to {MAX_AMOUNT:,} (Stripe's limits).",
    )
    currency = models.CharField(max_length=3, default="usd")
    active = models.BooleanField(default=True)
    validity_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1, message="Credits must stay valid for at least 1 day.")],
        help_text="Days the purchased credits stay usable; empty: they never expire.",
    )

    class Meta:
        ordering = ["amount", "slug"]
        constraints = [
            models.CheckConstraint(
                condition=Q(credits__gt=0),
                name="billing_creditpack_credits_gt_0",
                violation_error_message=PACK_CREDITS_MIN,
            ),
            # A pack the admin accepts must be creditable in one ledger change.
            models.CheckConstraint(
                condition=Q(credits__lte=MAX_CREDITS_PER_CHANGE),
                name="billing_creditpack_credits_lte_max",
                violation_error_message=PACK_CREDITS_MAX,
            ),
            # Stripe's minimum charge is 50 cents (or its equivalent), its maximum 8 digits.
            models.CheckConstraint(
                condition=Q(amount__gte=50),
                name="billing_creditpack_amount_gte_50",
                violation_error_message=PACK_PRICE_MIN,
            ),
            models.CheckConstraint(
                condition=Q(amount__lte=MAX_AMOUNT),
                name="billing_creditpack_amount_lte_max",
                violation_error_message=PACK_PRICE_MAX,
            ),
            models.CheckConstraint(
                condition=Q(validity_days__isnull=True) | Q(validity_days__gte=1),
                name="billing_creditpack_validity_gte_1",
                violation_error_message="Credits must stay valid for at least 1 day.",
            ),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[a-z]{3}$"),
                name="billing_creditpack_currency_iso",
                violation_error_message="The currency must be a three-letter ISO code, e.g. usd or eur.",
            ),
        ]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        self.currency = (self.currency or "").lower()
        super().save(*args, **kwargs)


class Payment(models.Model):
    """One attempt to buy a pack. Its price and credits are copied from the pack when it starts,
    so later pack edits never change what a payment was for. Credited at most once (a unique
    purchase ledger entry per payment)."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        REQUIRES_ACTION = "requires_action", _("Waiting for bank")  # 3-D Secure, or the bank's own check
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        REFUNDED = "refunded"
        DISPUTED = "disputed"

    class Purpose(models.TextChoices):
        PURCHASE = "purchase"
        AUTO_RECHARGE = "auto_recharge"

    user = models.ForeignKey(app_settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments")
    pack = models.ForeignKey(CreditPack, on_delete=models.PROTECT, related_name="payments")
    credits = models.PositiveIntegerField()
    amount = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    # Days the credits stay valid once credited (the pack's promise when the payment started; null: forever).
    validity_days = models.PositiveIntegerField(null=True, blank=True)
    stripe_payment_intent_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    # An auto-recharge (billing.autorecharge) or a purchase the user made; the database allows one
    # auto-recharge in flight per user (the partial unique constraint below).
    purpose = models.CharField(max_length=20, choices=Purpose.choices, default=Purpose.PURCHASE, db_default="purchase")
    # Why it failed: Stripe's message, for staff; the customer sees the sentence for
    # failure_code instead (billing.decline_messages, customer_failure_message).
    failure_message = models.CharField(max_length=500, blank=True, default="")
    # Stripe's decline code or error code (or "canceled"); empty when Stripe gave none.
    failure_code = models.CharField(max_length=100, blank=True, default="", db_default="")
    # Refunded now, as Stripe's charge.amount_refunded says: a refund that fails drops out of it.
    amount_refunded = models.PositiveIntegerField(default=0)
    # Refunds that failed or were canceled at Stripe: the money never left.
    amount_refund_failed = models.PositiveIntegerField(default=0)
    amount_disputed = models.PositiveIntegerField(default=0)
    # Disputed money Stripe returned (a dispute the merchant won).
    amount_reinstated = models.PositiveIntegerField(default=0)
    # Credits taken back now (clawbacks less reinstatements).
    credits_clawed_back = models.PositiveIntegerField(default=0)
    # Credits a refund or dispute should have removed but could not, because they were spent.
    credits_unrecovered = models.PositiveIntegerField(default=0)
    # Set when Stripe took the money but the credits could not be added (the ledger refused):
    # what went wrong, for staff. Empty when nothing needs a person.
    needs_attention = models.CharField(max_length=500, blank=True, default="")
    # Credits given back after a refund failed or a dispute was won.
    credits_reinstated = models.PositiveIntegerField(default=0)
    # The card Stripe charged (the charge's payment_method_details.card), as the receipt shows it:
    # Stripe's brand name ("visa", "mastercard"...) and the last 4 digits; blank until Stripe says.
    card_brand = models.CharField(max_length=32, blank=True, default="", db_default="")
    card_last4 = models.CharField(max_length=4, blank=True, default="", db_default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="billing_payment_user_created"),
            models.Index(fields=["status", "created_at"], name="billing_payment_status_created"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="billing_payment_amount_gt_0"),
            models.CheckConstraint(condition=Q(credits__gt=0), name="billing_payment_credits_gt_0"),
            models.CheckConstraint(
                condition=Q(amount_refunded__lte=models.F("amount")), name="billing_payment_refund_lte_amount"
            ),
            models.CheckConstraint(
                condition=Q(amount_disputed__lte=models.F("amount")), name="billing_payment_dispute_lte_amount"
            ),
            models.CheckConstraint(
                condition=Q(credits_clawed_back__lte=models.F("credits")), name="billing_payment_clawback_lte_credits"
            ),
            models.CheckConstraint(
                condition=Q(amount_reinstated__lte=models.F("amount_disputed")),
                name="billing_payment_reinstated_lte_disputed",
            ),
            models.UniqueConstraint(
                fields=["user"],
                condition=Q(purpose="auto_recharge", status__in=["pending", "requires_action"]),
                name="billing_payment_one_auto_recharge_in_flight",
            ),
        ]
        permissions = [("refund_payment", "Can refund a payment through Stripe")]

    def __str__(self):
        return f"Payment {self.pk} ({self.get_status_display()}, {money(self.amount, self.currency)})"

    @property
    def reference(self) -> str:
        """Names this payment of this installation at Stripe: ids repeat across databases (a
        reset development database, a second environment on one Stripe account); id plus
        creation time does not."""
        return f"{self.pk}-{int(self.created_at.timestamp() * 1_000_000)}"

    @property
    def customer_failure_message(self) -> str:
        """Why it failed, in words for the customer (never Stripe's, which are for staff)."""
        return customer_message(self.failure_code)

    @property
    def card_label(self) -> str:
        """The card as a receipt names it, "Visa •••• 4242"; empty when Stripe has not said."""
        if not self.card_last4:
            return ""
        brand = CARD_BRANDS.get(self.card_brand, self.card_brand.replace("_", " ").title() or _("Card"))
        return f"{brand} \u2022\u2022\u2022\u2022 {self.card_last4}"


# Stripe's card brand values as people write them (other values are title-cased).
CARD_BRANDS = {
    "visa": "Visa",
    "mastercard": "Mastercard",
    "amex": "American Express",
    "discover": "Discover",
    "diners": "Diners Club",
    "jcb": "JCB",
    "unionpay": "UnionPay",
    "cartes_bancaires": "Cartes Bancaires",
    "eftpos_au": "eftpos",
    "interac": "Interac",
}


class PaymentNotice(models.Model):
    """One email about a payment: its receipt, or the notice of one refund. Made in the same
    transaction as what it tells (the credit, the refund), at most one per fact (the unique
    constraint), and sent at most once: the sender claims it by setting `sent_at` in a
    conditional UPDATE (billing.notices)."""

    class Kind(models.TextChoices):
        RECEIPT = "receipt"
        REFUND = "refund"

    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="notices")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # Refunds: the payment's running total ever refunded (failed refunds included, so it only
    # grows) once this refund was made, which names the refund; 0 for the receipt.
    refunded_through = models.PositiveIntegerField(default=0)
    amount = models.PositiveIntegerField()  # minor units: the price, or what this refund returned
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["payment", "kind", "refunded_through"], name="billing_payment_notice_once"),
        ]
        indexes = [
            models.Index(fields=["created_at"], condition=Q(sent_at__isnull=True), name="billing_notice_unsent"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} of payment {self.payment_id}"


class LedgerEntryQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyViolation("ledger entries are never updated; append a correcting entry instead")

    def delete(self):
        raise AppendOnlyViolation("ledger entries are never deleted; append a correcting entry instead")

    update.queryset_only = True
    delete.queryset_only = True


class LedgerEntry(models.Model):
    """One change to one balance. Append-only: a new row is written instead of changing an old
    one (refused by the ORM here and by a trigger on PostgreSQL)."""

    class Kind(models.TextChoices):
        PURCHASE = "purchase"
        SPEND = "spend"
        ADJUSTMENT = "adjustment"
        REFUND = "refund"
        DISPUTE = "dispute"
        # Stored as "grant": entries are append-only (a PostgreSQL trigger) and existing rows hold it.
        BONUS = "grant", _("Bonus credits")
        REINSTATEMENT = "reinstatement"
        EXPIRY = "expiry"
        CAPTURE = "capture", _("Spent")  # what a hold (a paid view, a metered action) really used

    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="ledger_entries")
    delta = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    reason = models.CharField(max_length=255)  # the customer reads it on /billing/: their words, no internal ids
    # For staff only (who asked, the ticket, our ids): shown in the admin, never to the customer
    # (not on /billing/, /api/*, or in emails). Written with the entry, in the same statement.
    staff_note = models.CharField(max_length=500, blank=True, default="", db_default="")
    actor = models.ForeignKey(
        app_settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_entries")
    idempotency_key = models.CharField(max_length=255, unique=True, null=True, blank=True)
    # The operation's own time, as billing.ledger passes it (not the moment of the INSERT, which
    # auto_now_add would force): the draws from grants are checked against it, so a debit that
    # waited for the profile's lock is not recorded after an expiry it did not see.
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = LedgerEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["profile", "-id"], name="billing_ledger_profile_id")]
        constraints = [
            models.CheckConstraint(condition=~Q(delta=0), name="billing_ledgerentry_delta_nonzero"),
            models.CheckConstraint(condition=Q(balance_after__gte=0), name="billing_ledgerentry_balance_gte_0"),
            # A payment is credited once, whichever path gets there first.
            models.UniqueConstraint(
                fields=["payment"], condition=Q(kind="purchase"), name="billing_ledgerentry_one_purchase_per_payment"
            ),
        ]

    def __str__(self):
        return f"{self.delta:+d} {self.kind} ({self.reason})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyViolation("ledger entries are never updated; append a correcting entry instead")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyViolation("ledger entries are never deleted; append a correcting entry instead")


class CreditGrant(models.Model):
    """A lot of credits: every credit a user holds belongs to one grant. Invariant: 0 <= remaining
    <= amount, and a profile's grants' `remaining` add up to its balance; nothing is drawn from a
    grant at or after `expires_at`. Spends draw in the drawdown order (docs/DESIGN.md, "Credit
    grants"): soonest expiry first (never-expiring last), promotional before paid, oldest first.
    Only billing.ledger writes grants."""

    class Category(models.TextChoices):
        PAID = "paid", _("Paid")
        PROMOTIONAL = "promotional", _("Promotional")

    class Source(models.TextChoices):
        PURCHASE = "purchase", _("Purchase")
        GRANT = "grant", _("Granted")  # grant_credits: staff, the sign-up bonus, another app
        ADJUSTMENT = "adjustment", _("Staff adjustment")
        MIGRATION = "migration", _("Balance before grants")

    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="grants")
    category = models.CharField(max_length=20, choices=Category.choices)
    source = models.CharField(max_length=20, choices=Source.choices)
    amount = models.BigIntegerField()
    remaining = models.BigIntegerField()
    expires_at = models.DateTimeField(null=True, blank=True)
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, null=True, blank=True, related_name="grants")
    # The ledger entry that opened the grant (null only for balances carried over by the migration).
    entry = models.OneToOneField(
        "LedgerEntry", on_delete=models.PROTECT, null=True, blank=True, related_name="opened_grant"
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The open grants of a profile, in drawdown order: what every debit reads.
            models.Index(
                "profile",
                "expires_at",  # ascending sorts nulls (never expires) last on PostgreSQL
                models.F("category").desc(),  # "promotional" sorts after "paid": descending puts it first
                "created_at",
                "id",
                condition=Q(remaining__gt=0),
                name="billing_grant_open_drawdown",
            ),
            # The sweep's question: which open grants have expired?
            models.Index(fields=["expires_at"], condition=Q(remaining__gt=0), name="billing_grant_open_expiry"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="billing_creditgrant_amount_gt_0"),
            models.CheckConstraint(condition=Q(remaining__gte=0), name="billing_creditgrant_remaining_gte_0"),
            models.CheckConstraint(
                condition=Q(remaining__lte=models.F("amount")), name="billing_creditgrant_remaining_lte_amount"
            ),
            models.CheckConstraint(
                condition=Q(entry__isnull=False) | Q(source="migration"), name="billing_creditgrant_opened_by_entry"
            ),
        ]

    def __str__(self):
        return f"{self.remaining}/{self.amount} {self.category} credits"


class GrantAllocation(models.Model):
    """How much of one grant one ledger entry moved: a debit (spend, clawback, expiry, negative
    adjustment) drew `amount` from the grant; a reinstatement put `amount` back into it. Each such
    entry's allocations add up to its |delta|."""

    entry = models.ForeignKey(LedgerEntry, on_delete=models.PROTECT, related_name="allocations")
    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="allocations")
    amount = models.BigIntegerField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="billing_grantallocation_amount_gt_0"),
            models.UniqueConstraint(fields=["entry", "grant"], name="billing_grantallocation_entry_grant"),
        ]
        indexes = [models.Index(fields=["grant"], name="billing_allocation_grant")]

    def __str__(self):
        return f"{self.amount} of grant {self.grant_id} by entry {self.entry_id}"


class Hold(models.Model):
    """Credits reserved for an action whose cost is known only afterwards. While active its
    amount counts in `Profile.held`, so nothing else can spend it; it ends once: captured (what
    was used became a `capture` ledger entry, the rest freed), released, or expired. Only
    billing.ledger writes holds."""

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        CAPTURED = "captured", _("Captured")
        RELEASED = "released", _("Released")
        EXPIRED = "expired", _("Expired")

    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="holds")
    amount = models.BigIntegerField()
    captured = models.BigIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    reason = models.CharField(max_length=255)
    expires_at = models.DateTimeField()
    idempotency_key = models.CharField(max_length=255, unique=True, null=True, blank=True)
    # The capture's ledger entry (none when nothing was used, or the hold never was captured).
    entry = models.OneToOneField(LedgerEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="hold")
    created_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["profile", "expires_at"], condition=Q(status="active"), name="billing_hold_active"),
            models.Index(fields=["expires_at"], condition=Q(status="active"), name="billing_hold_active_expiry"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="billing_hold_amount_gt_0"),
            models.CheckConstraint(
                condition=Q(captured__gte=0) & Q(captured__lte=models.F("amount")),
                name="billing_hold_captured_in_amount",
            ),
            # Only a captured hold has used anything.
            models.CheckConstraint(condition=Q(status="captured") | Q(captured=0), name="billing_hold_captured_only"),
        ]
        permissions = [("release_hold", "Can release a user's hold on credits")]

    def __str__(self):
        return f"hold of {self.amount} ({self.status})"


class StripeEvent(models.Model):
    """Every webhook event Stripe sent, stored once by its id, with what became of it."""

    class Status(models.TextChoices):
        # Stored and acknowledged, its work not done yet (a worker runs it: billing.webhooks.queue).
        RECEIVED = "received"
        PROCESSED = "processed"
        IGNORED = "ignored"
        FAILED = "failed"
        # Another Stripe API version than the pinned one: stored, not applied (billing.webhooks.store).
        HELD = "held", _("Held for review")

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    # The version Stripe rendered the event in (its `api_version`); "" when it sent none.
    api_version = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True, default="")
    payload = models.JSONField()
    attempts = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # A failed event run by a worker is tried again from then on (backoff); null: not again by
    # itself (Stripe redelivers it, or staff run it from the admin).
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["status", "received_at"], name="billing_event_status_received")]

    def __str__(self):
        return f"{self.type} {self.event_id} ({self.status})"


class RateLimitCounter(models.Model):
    """Requests counted per bucket (e.g. one user's charges) and fixed time window, shared by
    every process and server. One row per (bucket, window); see billing.ratelimit."""

    bucket = models.CharField(max_length=200)
    window_start = models.BigIntegerField(help_text="Start of the window, in seconds since the epoch.")
    expires_at = models.BigIntegerField(help_text="End of the window, in seconds since the epoch.")
    hits = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bucket", "window_start"], name="billing_ratelimit_bucket_window")
        ]
        indexes = [models.Index(fields=["expires_at"], name="billing_ratelimit_expires")]

    def __str__(self):
        return f"{self.bucket} @ {self.window_start}: {self.hits}"


class IdempotentRequest(models.Model):
    """A paid request sent with an `Idempotency-Key` header (`@credits_required`,
    `@metered_view`): claimed before the view runs, with the hold that reserves its credits, and
    completed with the first response in the same transaction as the capture, so a repeat is
    answered with that response instead of running the paid action again. One row per (user,
    key). While `status_code` is null the first request is still running (a repeat waits); a
    claim whose hold ended without a capture belonged to a request that died, and is taken over."""

    user = models.ForeignKey(app_settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # What the key was first used for (view, cost, method, path): the same key on another request is refused.
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)
    content_type = models.CharField(max_length=255, blank=True, default="")
    location = models.CharField(max_length=2000, blank=True, default="")
    body = models.BinaryField(null=True)  # null: the response could not be kept (streamed or too large)
    hold = models.ForeignKey(Hold, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="billing_idempotentrequest_user_key")]

    def __str__(self):
        return f"{self.key} ({self.status_code})"


class PeriodicJob(models.Model):
    """When a periodic job (billing.tasks.PERIODIC) was last enqueued. One row per job: the
    `billing_periodic` command claims a due job with one conditional UPDATE of this row, so of
    two runs at once only one enqueues it, and a job is enqueued at most once per its period."""

    name = models.CharField(max_length=100, primary_key=True)
    last_enqueued_at = models.DateTimeField()

    def __str__(self):
        return f"{self.name} (last enqueued {self.last_enqueued_at:%Y-%m-%d %H:%M:%S})"
