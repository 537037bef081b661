"""Profiles: the balance, its active holds, grants and recent ledger, and the two forms through which staff
change a balance: "Adjust credits" (billing.ledger.adjust_credits) and "Grant credits"
(billing.ledger.grant_credits), each behind its own permission."""

import uuid

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.translation import gettext_lazy as _

from billing.admin.common import (
    ADJUST_PERMISSION,
    GRANT_PERMISSION,
    EmailSearchMixin,
    ProfilePartInline,
    admin_time,
    int_or_none,
)
from billing.admin.forms import AdjustCreditsForm, GrantCreditsForm
from billing.admin.holds import ActiveHoldInline
from billing.admin.paginator import LargeTablePaginator
from billing.exceptions import IdempotencyKeyReused, InsufficientCredits
from billing.ledger import adjust_credits, grant_credits
from billing.models import CreditGrant, LedgerEntry, Profile
from billing.users import display_name, lookup_fields


class CreditGrantInline(ProfilePartInline):
    """The profile's grants, newest first: read-only, like everything the ledger writes."""

    model = CreditGrant
    fk_name = "profile"
    fields = ["category", "source", "amount", "remaining", "expires_at", "payment", "created_at"]
    readonly_fields = fields
    verbose_name_plural = _("credit grants")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("payment").order_by("-created_at", "-id")


@admin.register(Profile)
class ProfileAdmin(EmailSearchMixin, admin.ModelAdmin):
    email_search_user_path = "user_id"
    search_help_text = _("An email address, or part of one.")
    list_display = ["email", "credits", "created_at"]
    list_select_related = ["user"]
    search_fields = [f"user__{field}" for field in lookup_fields()]
    ordering = ["-id"]
    show_full_result_count = False
    paginator = LargeTablePaginator  # counts that stay cheap on millions of rows
    fields = ["user", "credits", "on_hold", "next_expiry", "stripe_customer_id", "created_at", "recent_ledger"]
    readonly_fields = ["user", "credits", "on_hold", "next_expiry", "created_at", "recent_ledger"]
    inlines = [ActiveHoldInline, CreditGrantInline]
    change_form_template = "admin/billing/profile/change_form.html"
    recent_ledger_size = 20

    @admin.display(description=_("user"), ordering=f"user__{lookup_fields()[0]}")
    def email(self, profile):
        return display_name(profile.user)

    @admin.display(description=_("on hold"))
    def on_hold(self, profile):
        if profile.pk is None:
            return "-"
        holds_url = reverse("admin:billing_hold_changelist") + "?" + urlencode({"profile__id__exact": profile.pk})
        return format_html(
            '{} credits reserved by active holds (<a href="{}">all holds and how they ended</a>)',
            profile.held,
            holds_url,
        )

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
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    admin_time(entry.created_at),
                    entry.get_kind_display(),
                    f"{entry.delta:+d}",
                    entry.balance_after,
                    entry.reason,
                    entry.staff_note,
                    display_name(entry.actor),
                )
                for entry in entries
            ),
        )
        return format_html(
            '<table class="recent-ledger"><thead><tr><th>When</th><th>Kind</th><th>Delta</th>'
            "<th>Balance after</th><th>Reason (customer sees)</th><th>Staff note</th><th>Actor</th></tr></thead>"
            "<tbody>{}</tbody></table>"
            '<p><a href="{}">All ledger entries for this profile</a> (newest {} shown here)</p>',
            rows,
            all_url,
            self.recent_ledger_size,
        )

    def get_inline_instances(self, request, obj=None):
        # The grants are read-only: a saved profile form has nothing for them (not even a formset's
        # management fields), so they take no part in a POST.
        if request.method == "POST":
            return []
        return super().get_inline_instances(request, obj)

    def has_add_permission(self, request):
        return False  # every user gets a profile automatically

    def has_delete_permission(self, request, obj=None):
        return False  # a profile's ledger must outlive it

    def has_adjust_permission(self, request):
        return request.user.has_perm(ADJUST_PERMISSION)

    def has_grant_permission(self, request):
        return request.user.has_perm(GRANT_PERMISSION)

    def get_urls(self):
        own = [
            path(
                "<path:object_id>/adjust/", self.admin_site.admin_view(self.adjust_view), name="billing_profile_adjust"
            ),
            path("<path:object_id>/grant/", self.admin_site.admin_view(self.grant_view), name="billing_profile_grant"),
        ]
        return [*own, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_adjust_credits": self.has_adjust_permission(request),
            "can_grant_credits": self.has_grant_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def adjust_view(self, request, object_id):
        """A signed delta and a reason, applied through billing.ledger.adjust_credits."""
        if not self.has_adjust_permission(request):
            raise PermissionDenied
        return self._ledger_form_view(
            request, object_id, AdjustCreditsForm, self._apply_adjustment, "admin/billing/profile/adjust_credits.html"
        )

    def grant_view(self, request, object_id):
        """Credits, their category and expiry, and a reason, given through billing.ledger.grant_credits."""
        if not self.has_grant_permission(request):
            raise PermissionDenied
        return self._ledger_form_view(
            request, object_id, GrantCreditsForm, self._apply_grant, "admin/billing/profile/grant_credits.html"
        )

    def _ledger_form_view(self, request, object_id, form_class, apply, template):
        profile = Profile.objects.select_related("user").filter(pk=int_or_none(unquote(object_id))).first()
        if profile is None:
            raise Http404("No profile with that id.")
        if request.method == "POST":
            form = form_class(request.POST)
            if form.is_valid() and apply(request, profile, form):
                return HttpResponseRedirect(reverse("admin:billing_profile_change", args=[profile.pk]))
        else:
            form = form_class(initial={"request_id": uuid.uuid4()})
        action = _("Adjust credits") if form_class is AdjustCreditsForm else _("Grant credits")
        context = {
            **self.admin_site.each_context(request),
            "title": f"{action}: {display_name(profile.user)}",
            "subtitle": None,
            "opts": self.opts,
            "original": profile,
            "profile": profile,
            "form": form,
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, template, context)

    def _apply_adjustment(self, request, profile, form) -> bool:
        delta = form.cleaned_data["delta"]
        reason = form.cleaned_data["reason"]
        key = f"admin-adjust:{form.cleaned_data['request_id']}"
        already = LedgerEntry.objects.filter(idempotency_key=key).exists()
        try:
            entry = adjust_credits(
                profile.user,
                delta,
                reason=reason,
                actor=request.user,
                idempotency_key=key,
                staff_note=form.cleaned_data["staff_note"],
            )
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

    def _apply_grant(self, request, profile, form) -> bool:
        data = form.cleaned_data
        key = f"admin-grant:{data['request_id']}"
        already = LedgerEntry.objects.filter(idempotency_key=key).exists()
        try:
            entry = grant_credits(
                profile.user,
                data["amount"],
                reason=data["reason"],
                category=data["category"],
                expires_at=data["expires_at"],
                actor=request.user,
                idempotency_key=key,
                staff_note=data["staff_note"],
            )
        except IdempotencyKeyReused:
            form.add_error(None, "This form was already submitted with other values. Reload the page to start again.")
            return False
        except ValueError as exc:  # the ledger refused (a balance beyond what it can hold, a past expiry)
            form.add_error(None, str(exc))
            return False
        if already:
            messages.info(request, "Those credits had already been granted; nothing changed.")
            return True
        category = CreditGrant.Category(data["category"]).label.lower()
        until = f", expiring {data['expires_at']:%Y-%m-%d %H:%M %Z}" if data["expires_at"] else ", never expiring"
        self.log_change(request, profile, f"Granted {entry.delta} {category} credits{until}: {data['reason']}")
        messages.success(
            request,
            f"Granted {display_name(profile.user)} {entry.delta} {category} credits{until}; "
            f"the balance is {entry.balance_after}.",
        )
        return True
