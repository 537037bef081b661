"""Staff tools in the Django admin.

Balances are never edited here: `credits` is read-only everywhere, and the only way to change one
is the "Adjust credits" form, which goes through billing.ledger.adjust_credits (an entry with a
reason and the staff user as actor). The ledger, payments and Stripe events are read-only.

Each changelist keeps to a fixed number of queries whatever the table's size: related rows come
with `list_select_related`, no filter needs a DISTINCT scan, and the full-table count is skipped.
"""

import json
import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models.functions import Lower
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.translation import gettext_lazy as _

from billing.exceptions import BillingError, IdempotencyKeyReused, InsufficientCredits
from billing.ledger import MAX_DELTA, adjust_credits
from billing.models import CreditPack, LedgerEntry, Payment, Profile, StripeEvent
from billing.refunds import refund_payment
from billing.templatetags.billing_money import money
from billing.users import display_name, email_field, lookup_fields
from billing.webhooks import reprocess_event

ADJUST_PERMISSION = "billing.adjust_credits"

REFUND_PERMISSION = "billing.refund_payment"
# Events are never edited; "change" on them is the right to rerun a failed one.
REPROCESS_PERMISSION = "billing.change_stripeevent"


class EmailSearchMixin:
    """A search term that is a whole email address is looked up through the case-insensitive
    unique index on the user's email (milliseconds on any table size) instead of the admin's
    default substring scan; other terms keep the default search."""

    email_search_user_path: str  # the lookup path from this model to its user id

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        email = email_field()
        if email and "@" in term and " " not in term:
            user_ids = list(
                get_user_model()
                ._default_manager.annotate(email_lower=Lower(email))
                .filter(email_lower=term.lower())
                .values_list("pk", flat=True)
            )
            if user_ids:
                return queryset.filter(**{f"{self.email_search_user_path}__in": user_ids}), False
        return super().get_search_results(request, queryset, search_term)


# --- profiles and the adjust form ------------------------------------------------------------


class AdjustCreditsForm(forms.Form):
    delta = forms.IntegerField(
        label=_("Change by"),
        min_value=-MAX_DELTA,
        max_value=MAX_DELTA,
        help_text=_("A whole number of credits: positive adds, negative removes (e.g. 5 or -3)."),
    )
    reason = forms.CharField(
        max_length=255,
        help_text=_("Required. Saved in the ledger with your name."),
        widget=forms.TextInput(attrs={"size": 60}),
    )
    # One id per rendering of the form: a double-click or a resubmitted POST reuses it as the
    # ledger idempotency key, so the adjustment is applied once.
    request_id = forms.UUIDField(widget=forms.HiddenInput)

    def clean_delta(self):
        delta = self.cleaned_data["delta"]
        if delta == 0:
            raise forms.ValidationError(_("Enter a non-zero number of credits."))
        return delta

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError(_("A reason is required."))
        return reason


@admin.register(Profile)
class ProfileAdmin(EmailSearchMixin, admin.ModelAdmin):
    email_search_user_path = "user_id"
    search_help_text = _("An email address, or part of one.")
    list_display = ["email", "credits", "created_at"]
    list_select_related = ["user"]
    search_fields = [f"user__{field}" for field in lookup_fields()]
    ordering = ["-id"]
    show_full_result_count = False
    fields = ["user", "credits", "stripe_customer_id", "created_at", "recent_ledger"]
    readonly_fields = ["user", "credits", "created_at", "recent_ledger"]
    change_form_template = "admin/billing/profile/change_form.html"
    recent_ledger_size = 20

    @admin.display(description=_("user"), ordering=f"user__{lookup_fields()[0]}")
    def email(self, profile):
        return display_name(profile.user)

    @admin.display(description=_("recent ledger entries"))
    def recent_ledger(self, profile):
        if profile.pk is None:
            return "-"
        entries = list(
            LedgerEntry.objects.filter(profile=profile)
            .select_related("actor")
            .order_by("-id")[: self.recent_ledger_size]
        )
        all_url = reverse("admin:billing_ledgerentry_changelist") + "?" + urlencode({"profile__id__exact": profile.pk})
        if not entries:
            return "No ledger entries yet."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    entry.created_at.strftime("%Y-%m-%d %H:%M"),
                    entry.get_kind_display(),
                    f"{entry.delta:+d}",
                    entry.balance_after,
                    entry.reason,
                    display_name(entry.actor),
                )
                for entry in entries
            ),
        )
        return format_html(
            '<table class="recent-ledger"><thead><tr><th>When</th><th>Kind</th><th>Delta</th>'
            "<th>Balance after</th><th>Reason</th><th>Actor</th></tr></thead><tbody>{}</tbody></table>"
            '<p><a href="{}">All ledger entries for this profile</a> (newest {} shown here)</p>',
            rows,
            all_url,
            self.recent_ledger_size,
        )

    def has_add_permission(self, request):
        return False  # every user gets a profile automatically

    def has_delete_permission(self, request, obj=None):
        return False  # a profile's ledger must outlive it

    def has_adjust_permission(self, request):
        return request.user.has_perm(ADJUST_PERMISSION)

    def get_urls(self):
        adjust = path(
            "<path:object_id>/adjust/",
            self.admin_site.admin_view(self.adjust_view),
            name="billing_profile_adjust",
        )
        return [adjust, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_adjust_credits": self.has_adjust_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def adjust_view(self, request, object_id):
        """A signed delta and a reason, applied through billing.ledger.adjust_credits."""
        if not self.has_adjust_permission(request):
            raise PermissionDenied
        profile = Profile.objects.select_related("user").filter(pk=_int_or_none(unquote(object_id))).first()
        if profile is None:
            raise Http404("No profile with that id.")

        if request.method == "POST":
            form = AdjustCreditsForm(request.POST)
            if form.is_valid() and self._apply_adjustment(request, profile, form):
                change_url = reverse("admin:billing_profile_change", args=[profile.pk])
                return HttpResponseRedirect(change_url)
        else:
            form = AdjustCreditsForm(initial={"request_id": uuid.uuid4()})

        context = {
            **self.admin_site.each_context(request),
            "title": f"Adjust credits: {display_name(profile.user)}",
            "subtitle": None,
            "opts": self.opts,
            "original": profile,
            "profile": profile,
            "form": form,
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/billing/profile/adjust_credits.html", context)

    def _apply_adjustment(self, request, profile, form) -> bool:
        delta = form.cleaned_data["delta"]
        reason = form.cleaned_data["reason"]
        key = f"admin-adjust:{form.cleaned_data['request_id']}"
        already = LedgerEntry.objects.filter(idempotency_key=key).exists()
        try:
            entry = adjust_credits(profile.user, delta, reason=reason, actor=request.user, idempotency_key=key)
        except InsufficientCredits as exc:
            form.add_error("delta", f"The balance is {exc.balance}; it cannot go below zero.")
            return False
        except IdempotencyKeyReused:
            form.add_error(None, "This form was already submitted with other values. Reload the page to start again.")
            return False
        except ValueError as exc:  # the ledger refused the numbers (e.g. a balance beyond what it can hold)
            form.add_error("delta", str(exc))
            return False
        if already:
            messages.info(request, "That adjustment had already been applied; nothing changed.")
            return True
        self.log_change(request, profile, f"Adjusted credits by {entry.delta:+d}: {reason}")
        messages.success(
            request,
            f"Adjusted {display_name(profile.user)} by {entry.delta:+d} credits; the balance is {entry.balance_after}.",
        )
        return True


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- the ledger: read-only ---------------------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable by staff with the view permission; nobody adds, changes or deletes here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(LedgerEntry)
class LedgerEntryAdmin(EmailSearchMixin, ReadOnlyAdmin):
    email_search_user_path = "profile__user_id"
    search_help_text = _(
        "A whole email address (fast), or part of an email or reason, or an exact idempotency key (scans the ledger)."
    )
    list_display = ["id", "when", "email", "kind", "signed_delta", "balance_after", "reason", "actor"]
    list_display_links = ["id"]
    sortable_by = ["id"]  # the only order a million rows can be sorted in by an index
    show_facets = admin.ShowFacets.NEVER  # per-choice counts would scan the whole ledger
    list_select_related = ["profile__user", "actor"]
    # `kind` has fixed choices, so this filter costs no query of its own.
    list_filter = ["kind"]
    search_fields = [*(f"profile__user__{field}" for field in lookup_fields()), "reason", "=idempotency_key"]
    ordering = ["-id"]
    show_full_result_count = False
    list_per_page = 50
    fields = [
        "id",
        "created_at",
        "profile",
        "kind",
        "delta",
        "balance_after",
        "reason",
        "actor",
        "payment",
        "idempotency_key",
    ]
    readonly_fields = fields

    @admin.display(description=_("user"))
    def email(self, entry):
        return display_name(entry.profile.user)

    @admin.display(description=_("created (UTC)"))
    def when(self, entry):
        return entry.created_at.strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description=_("delta"))
    def signed_delta(self, entry):
        return f"{entry.delta:+d}"


# --- packs: editable ---------------------------------------------------------------------------


class CreditPackForm(forms.ModelForm):
    class Meta:
        model = CreditPack
        fields = ["slug", "name", "credits", "amount", "currency", "active"]
        help_texts = {"currency": "Three-letter ISO code, e.g. usd."}

    def clean_currency(self):
        # Stored lower-case (as Stripe uses it); the database check would refuse "USD".
        return self.cleaned_data["currency"].strip().lower()


@admin.register(CreditPack)
class CreditPackAdmin(admin.ModelAdmin):
    form = CreditPackForm
    list_display = ["name", "slug", "credits", "price", "active"]
    list_filter = ["active"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}

    @admin.display(description=_("price"), ordering="amount")
    def price(self, pack):
        return money(pack.amount, pack.currency)


# --- payments: read-only (refunds go through Stripe, never an edit) ----------------------------


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
class PaymentAdmin(EmailSearchMixin, ReadOnlyAdmin):
    email_search_user_path = "user_id"
    list_display = [
        "id",
        "created_at",
        "email",
        "pack",
        "status",
        "price",
        "credits",
        "refunded",
        "credits_clawed_back",
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

    @admin.display(description=_("amount"), ordering="amount")
    def price(self, payment):
        return money(payment.amount, payment.currency)

    @admin.display(description=_("refunded"), ordering="amount_refunded")
    def refunded(self, payment):
        return money(payment.amount_refunded, payment.currency) if payment.amount_refunded else "-"

    @admin.display(description=_("credits not recovered"), ordering="credits_unrecovered")
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


# --- Stripe webhook events: read-only -----------------------------------------------------------


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "type", "status", "api_version", "attempts", "received_at", "processed_at"]
    list_filter = ["status"]
    search_fields = ["=event_id", "type"]
    ordering = ["-id"]
    show_full_result_count = False
    fields = [
        "event_id",
        "type",
        "status",
        "api_version",
        "error",
        "attempts",
        "received_at",
        "processed_at",
        "pretty_payload",
    ]
    readonly_fields = fields
    actions = ["reprocess"]

    def changelist_view(self, request, extra_context=None):
        # Held events were answered 200, so Stripe never sends them again: until staff look,
        # nothing else says they are there. One indexed EXISTS per page view.
        if StripeEvent.objects.filter(status=StripeEvent.Status.HELD).exists():
            messages.warning(
                request,
                format_html(
                    '{} <a href="?{}">{}</a>',
                    _(
                        "Some Stripe events are held for review: Stripe sent them in another API version "
                        "than this site expects, so they were stored but not applied. Check each one's "
                        "payload, then run it with the reprocess action."
                    ),
                    urlencode({"status__exact": StripeEvent.Status.HELD}),
                    _("Show held events"),
                ),
            )
        return super().changelist_view(request, extra_context)

    def has_reprocess_permission(self, request):
        return request.user.has_perm(REPROCESS_PERMISSION)

    @admin.action(description=_("Reprocess failed or held events"), permissions=["reprocess"])
    def reprocess(self, request, queryset):
        """Run each selected failed or held event's handler again; other events are left alone.

        A held event runs whatever its API version: the action is how staff apply one they checked.
        """
        for event in queryset.order_by("pk"):
            was = event.status
            event, ran = reprocess_event(event)
            if not ran:
                messages.info(
                    request, f"Event {event.event_id}: skipped, it is {event.status} (only failed or held ones run)."
                )
            elif event.status == StripeEvent.Status.FAILED:
                again = "failed again" if was == StripeEvent.Status.FAILED else "failed"
                messages.error(request, f"Event {event.event_id}: {again}. {event.error}")
            else:
                messages.success(request, f"Event {event.event_id}: {event.status}.")

    @admin.display(description=_("payload"))
    def pretty_payload(self, event):
        return format_html("<pre>{}</pre>", json.dumps(event.payload, indent=2, sort_keys=True))
