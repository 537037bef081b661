"""Payments, read-only: refunds go through Stripe (an action), never an edit."""

from decimal import Decimal, InvalidOperation

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from billing.admin.common import REFUND_PERMISSION, EmailSearchMixin, ReadOnlyAdmin, WideListMixin, admin_time
from billing.admin.paginator import LargeTablePaginator
from billing.exceptions import BillingError
from billing.models import Payment
from billing.refunds import preview_refund, refund_payment
from billing.templatetags.billing_money import decimals, money
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
        "price_and_card",
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
    paginator = LargeTablePaginator  # counts that stay cheap on millions of rows
    fields = [
        "id",
        "user",
        "pack",
        "status",
        "needs_attention",
        "failure_message",
        "failure_code",
        "price",
        "card",
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
    @admin.display(description=_("created"), ordering="created_at")
    def created(self, payment):
        return admin_time(payment.created_at)

    @admin.display(description=_("amount"), ordering="amount")
    def price(self, payment):
        return money(payment.amount, payment.currency)

    @admin.display(description=_("amount"), ordering="amount")
    def price_and_card(self, payment):
        # In the list the card goes under the amount, not in a column of its own: it must fit 1280 px.
        if not payment.card_label:
            return self.price(payment)
        return format_html(
            '{}<br><small style="white-space:nowrap">{}</small>', self.price(payment), payment.card_label
        )

    @admin.display(description=_("card"), ordering="card_last4")
    def card(self, payment):
        # Stripe's brand and last 4 of the card charged (or refused), "Visa •••• 4242".
        return (
            format_html('<span style="white-space:nowrap">{}</span>', payment.card_label) if payment.card_label else "-"
        )

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

    def changelist_view(self, request, extra_context=None):
        # Django answers an action one may not run with "No action selected"; a refund is
        # money, so staff without the permission are told plainly they may not.
        posted_refund = request.method == "POST" and request.POST.get("action") == "refund_through_stripe"
        if posted_refund and not self.has_refund_permission(request):
            raise PermissionDenied
        return super().changelist_view(request, extra_context)

    @admin.action(description=_("Refund through Stripe"), permissions=["refund"])
    def refund_through_stripe(self, request, queryset):
        """Show what refunding one payment would do, with the amount to refund; refund once confirmed.

        Like Django's delete confirmation: the page posts the action back with "post" set. The
        form carries what was refunded when the page was shown, so a second submit of the same
        page (or a page gone stale under another refund) is refused instead of refunding again."""
        if queryset.count() != 1:
            messages.warning(request, _("Refunds are made one payment at a time: select a single payment."))
            return None
        payment = queryset.select_related("user", "pack").get()
        form = RefundForm(payment, request.POST if request.POST.get("post") == "yes" else None)
        if form.is_bound and form.has_error("refunded_before"):
            messages.warning(request, form.errors["refunded_before"][0])
            form = RefundForm(payment)  # the figures as they are now, for a fresh decision
        try:
            preview = preview_refund(payment)
            if form.is_bound and form.is_valid():
                return self._refund(request, payment, form.cleaned_data["amount"], form.cleaned_data["staff_note"])
            if form.is_bound:
                amount = form.cleaned_data.get("amount") if not form.has_error("amount") else None
                preview = preview_refund(payment, amount) if amount else preview
        except BillingError as exc:
            messages.error(request, f"Payment {payment.pk}: not refunded. {exc.user_message}")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": _("Refund a payment"),
            "opts": self.model._meta,
            "payment": payment,
            "customer": display_name(payment.user),
            "preview": preview,
            "form": form,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/billing/payment/refund_confirmation.html", context)

    def _refund(self, request, payment, amount, staff_note=""):
        clawed_before, unrecovered_before = payment.credits_clawed_back, payment.credits_unrecovered
        try:
            refunded = refund_payment(payment, actor=request.user, amount=amount, staff_note=staff_note)
        except BillingError as exc:
            messages.error(request, f"Payment {payment.pk}: not refunded. {exc.user_message}")
            return None
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
        return None


class RefundForm(forms.Form):
    """The amount to refund, written as money ("2.50" for $2.50; whole units in zero-decimal currencies)."""

    amount = forms.CharField(label=_("Amount to refund"), max_length=20)
    refunded_before = forms.IntegerField(widget=forms.HiddenInput)
    staff_note = forms.CharField(
        label=_("Staff note"),
        required=False,
        max_length=300,  # with the payment's and the refund's ids it fits LedgerEntry.staff_note
        help_text=_(
            "Staff only: who asked, ticket number. Saved with the ledger entry, with the payment's and the "
            "refund's ids and your name. The customer never sees it: their billing page says which purchase "
            "was refunded."
        ),
        widget=forms.TextInput(attrs={"size": 60}),
    )

    def __init__(self, payment, data=None):
        self.payment = payment
        remaining = payment.amount - payment.amount_refunded
        initial = {
            "amount": _as_decimal(remaining, payment.currency),
            "refunded_before": payment.amount_refunded + payment.amount_refund_failed,
        }
        super().__init__(data, initial=initial)
        self.fields["amount"].help_text = _("At most %(remaining)s, what is not yet refunded.") % {
            "remaining": money(remaining, payment.currency)
        }

    def clean_amount(self):
        payment = self.payment
        places = decimals(payment.currency)
        remaining = payment.amount - payment.amount_refunded
        try:
            written = Decimal(self.cleaned_data["amount"].strip().replace(",", ""))
        except InvalidOperation:
            written = None
        if written is None or not written.is_finite() or written != written.quantize(Decimal(1).scaleb(-places)):
            raise forms.ValidationError(
                _("Write the amount as money, for example %(example)s.")
                % {"example": _as_decimal(remaining, payment.currency)}
            )
        amount = int(written.scaleb(places))
        if not 0 < amount <= remaining:
            raise forms.ValidationError(
                _("The refund must be above zero and at most the %(remaining)s not yet refunded.")
                % {"remaining": money(remaining, payment.currency)}
            )
        return amount

    def clean_refunded_before(self):
        payment = self.payment
        if self.cleaned_data["refunded_before"] != payment.amount_refunded + payment.amount_refund_failed:
            raise forms.ValidationError(
                _("This payment was refunded since this page was shown; check the figures below and confirm again.")
            )
        return self.cleaned_data["refunded_before"]


def _as_decimal(amount: int, currency: str) -> str:
    places = decimals(currency)
    return f"{Decimal(amount).scaleb(-places):.{places}f}"
