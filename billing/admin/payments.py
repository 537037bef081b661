"""Payments, read-only: refunds go through Stripe (an action), never an edit."""

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from billing.admin.common import REFUND_PERMISSION, EmailSearchMixin, ReadOnlyAdmin, WideListMixin
from billing.exceptions import BillingError
from billing.models import Payment
from billing.refunds import refund_payment
from billing.templatetags.billing_money import money
from billing.users import display_name, lookup_fields


class UnrecoveredCreditsFilter(admin.SimpleListFilter):
    title = "credits not recovered"
    parameter_name = "unrecovered"

    def lookups(self, request, model_admin):
        return [("yes", "Some credits not recovered")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(credits_unrecovered__gt=0)
        return queryset


class NeedsAttentionFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return [("yes", "Charged, but the credits could not be added")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(needs_attention="")
        return queryset


@admin.register(Payment)
class PaymentAdmin(WideListMixin, EmailSearchMixin, ReadOnlyAdmin):
    email_search_user_path = "user_id"
    list_display = [
        "id",
        "created",
        "email",
        "pack",
        "status",
        "price",
        "refunded",
        "clawed_back",
        "unrecovered",
    ]
    list_select_related = ["user", "pack"]
    list_filter = ["status", NeedsAttentionFilter, UnrecoveredCreditsFilter]
    show_facets = admin.ShowFacets.NEVER
    search_fields = [*(f"user__{field}" for field in lookup_fields()), "=stripe_payment_intent_id"]
    ordering = ["-id"]
    show_full_result_count = False
    fields = [
        "id",
        "user",
        "pack",
        "status",
        "needs_attention",
        "failure_message",
        "price",
        "credits",
        "stripe_payment_intent_id",
        "refunded",
        "credits_clawed_back",
        "unrecovered",
        "clawback_summary",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields
    actions = ["refund_through_stripe"]

    @admin.display(description=_("user"), ordering=f"user__{lookup_fields()[0]}")
    def email(self, payment):
        return display_name(payment.user)

    # The list has no credits column (the pack says it; the payment's page has it) so that the
    # refund columns fit at 1280 px.
    @admin.display(description=_("created (UTC)"), ordering="created_at")
    def created(self, payment):
        return payment.created_at.strftime("%Y-%m-%d %H:%M")

    @admin.display(description=_("amount"), ordering="amount")
    def price(self, payment):
        return money(payment.amount, payment.currency)

    @admin.display(description=_("refunded"), ordering="amount_refunded")
    def refunded(self, payment):
        return money(payment.amount_refunded, payment.currency) if payment.amount_refunded else "-"

    @admin.display(description=_("clawed back"), ordering="credits_clawed_back")
    def clawed_back(self, payment):
        return payment.credits_clawed_back

    @admin.display(description=_("not recovered"), ordering="credits_unrecovered")
    def unrecovered(self, payment):
        # Credits a refund or dispute could not take back because they were already spent.
        if not payment.credits_unrecovered:
            return "0"
        return format_html(
            '<strong style="color:#b42318" title="spent before the refund or dispute">{} not recovered</strong>',
            payment.credits_unrecovered,
        )

    @admin.display(description=_("refunds and clawback"))
    def clawback_summary(self, payment):
        if not (payment.amount_refunded or payment.amount_refund_failed or payment.amount_disputed):
            return "Nothing refunded or disputed."
        parts = [
            format_html(
                "Refunded {} of {}.",
                money(payment.amount_refunded, payment.currency),
                money(payment.amount, payment.currency),
            )
        ]
        if payment.amount_refund_failed:
            parts.append(format_html("Refunds of {} failed.", money(payment.amount_refund_failed, payment.currency)))
        if payment.amount_disputed:
            parts.append(format_html("Disputed {}.", money(payment.amount_disputed, payment.currency)))
        if payment.amount_reinstated:
            parts.append(format_html("Dispute won: {} returned.", money(payment.amount_reinstated, payment.currency)))
        parts.append(format_html("{} of {} credits clawed back.", payment.credits_clawed_back, payment.credits))
        if payment.credits_reinstated:
            parts.append(format_html("{} credits given back.", payment.credits_reinstated))
        if payment.credits_unrecovered:
            parts.append(
                format_html(
                    '<strong style="color:#b42318">{} credits could not be recovered: the user had already '
                    "spent them (shortfall).</strong>",
                    payment.credits_unrecovered,
                )
            )
        return format_html_join(" ", "{}", ((part,) for part in parts))

    def has_refund_permission(self, request):
        return request.user.has_perm(REFUND_PERMISSION)

    @admin.action(description=_("Refund through Stripe"), permissions=["refund"])
    def refund_through_stripe(self, request, queryset):
        """Refund what is left of each selected payment through Stripe, then claw back its credits."""
        for payment in queryset.select_related("user", "pack").order_by("pk"):
            clawed_before, unrecovered_before = payment.credits_clawed_back, payment.credits_unrecovered
            try:
                refunded = refund_payment(payment, actor=request.user)
            except BillingError as exc:
                messages.error(request, f"Payment {payment.pk}: not refunded. {exc.user_message}")
                continue
            clawed = refunded.credits_clawed_back - clawed_before
            short = refunded.credits_unrecovered - unrecovered_before
            summary = (
                f"Payment {payment.pk} ({display_name(payment.user)}): refunded "
                f"{money(refunded.amount_refunded, refunded.currency)} in total; {clawed} credits clawed back"
            )
            self.log_change(request, refunded, f"Refunded through Stripe; {clawed} credits clawed back, {short} short")
            if short:
                messages.warning(request, f"{summary}, {short} could not be recovered (already spent).")
            else:
                messages.success(request, f"{summary}.")
