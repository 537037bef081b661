"""Holds, read-only: credits reserved for an action still running, and how each ended (captured,
released, expired) with its capture's ledger entry. Staff with `billing.release_hold` can release
an active hold (an action on the list, a button on its page) through billing.ledger.release_hold,
when the action that holds it is stuck; releasing a hold that has ended changes nothing."""

from http import HTTPStatus

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from billing.admin.common import (
    RELEASE_PERMISSION,
    EmailSearchMixin,
    ProfilePartInline,
    ReadOnlyAdmin,
    admin_time,
    int_or_none,
)
from billing.admin.paginator import LargeTablePaginator
from billing.ledger import release_hold
from billing.models import Hold
from billing.users import display_name, lookup_fields


class ActiveHoldInline(ProfilePartInline):
    """On a profile's page: the holds still reserving its credits, soonest expiry first."""

    model = Hold
    fk_name = "profile"
    fields = ["reason", "amount", "expires_at", "created_at", "idempotency_key"]
    readonly_fields = fields
    verbose_name_plural = _("active holds")

    def get_queryset(self, request):
        return super().get_queryset(request).filter(status=Hold.Status.ACTIVE).order_by("expires_at", "id")


@admin.register(Hold)
class HoldAdmin(EmailSearchMixin, ReadOnlyAdmin):
    email_search_user_path = "profile__user_id"
    search_help_text = _("A whole email address (fast), or part of one.")
    list_display = ["id", "email", "reason", "amount", "shown_status", "expires", "capture"]
    list_display_links = ["id"]
    list_select_related = ["profile__user", "entry"]
    list_filter = ["status"]
    show_facets = admin.ShowFacets.NEVER  # per-choice counts would scan every hold
    search_fields = [f"profile__user__{field}" for field in lookup_fields()]
    ordering = ["-id"]
    show_full_result_count = False
    paginator = LargeTablePaginator  # counts that stay cheap on millions of rows
    list_per_page = 50
    fields = [
        "id",
        "profile",
        "reason",
        "amount",
        "shown_status",
        "captured",
        "capture",
        "created_at",
        "expires_at",
        "ended_at",
        "idempotency_key",
    ]
    readonly_fields = fields
    actions = ["release_selected"]
    change_form_template = "admin/billing/hold/change_form.html"

    @admin.display(description=_("user"))
    def email(self, hold):
        return display_name(hold.profile.user)

    @admin.display(description=_("status"), ordering="status")
    def shown_status(self, hold):
        if hold.status == Hold.Status.ACTIVE and hold.expires_at <= timezone.now():
            # It reserves nothing any more; the next write for this user (or expire_credits) sweeps it.
            return _("Active, past its expiry (released at the next sweep)")
        if hold.status == Hold.Status.CAPTURED:
            return format_html("{} ({} {})", hold.get_status_display(), hold.captured, _("used"))
        return hold.get_status_display()

    @admin.display(description=_("expires"), ordering="expires_at")
    def expires(self, hold):
        return admin_time(hold.expires_at)

    @admin.display(description=_("capture entry"))
    def capture(self, hold):
        if hold.entry_id is None:
            return "-"
        return format_html(
            '<a href="{}">entry {} ({})</a>',
            reverse("admin:billing_ledgerentry_change", args=[hold.entry_id]),
            hold.entry_id,
            f"{hold.entry.delta:+d}",
        )

    def has_release_permission(self, request, obj=None):
        return request.user.has_perm(RELEASE_PERMISSION)

    def get_urls(self):
        own = [
            path(
                "<path:object_id>/release/", self.admin_site.admin_view(self.release_view), name="billing_hold_release"
            ),
        ]
        return [*own, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_release_hold": self.has_release_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description=_("Release the selected active holds"), permissions=["release"])
    def release_selected(self, request, queryset):
        """Free each selected active hold's credits; holds that have ended are left as they are."""
        for hold in queryset.select_related("profile__user").order_by("pk"):
            self._release(request, hold)

    def release_view(self, request, object_id):
        """POST from the Release button on a hold's page."""
        if request.method != "POST":
            return HttpResponse(status=HTTPStatus.METHOD_NOT_ALLOWED, headers={"Allow": "POST"})
        if not self.has_release_permission(request):
            raise PermissionDenied
        hold = Hold.objects.select_related("profile__user").filter(pk=int_or_none(unquote(object_id))).first()
        if hold is None:
            raise Http404("No hold with that id.")
        self._release(request, hold)
        return HttpResponseRedirect(reverse("admin:billing_hold_change", args=[hold.pk]))

    def _release(self, request, hold: Hold) -> None:
        who = display_name(hold.profile.user)
        if hold.status != Hold.Status.ACTIVE:
            messages.info(request, f"Hold {hold.pk} ({who}) had already ended ({hold.status}); nothing changed.")
            return
        ended = release_hold(hold)
        if ended.status != Hold.Status.RELEASED:  # captured or swept meanwhile
            messages.info(request, f"Hold {hold.pk} ({who}) had already ended ({ended.status}); nothing changed.")
            return
        self.log_change(request, hold, f"Released the hold of {hold.amount} credits: {hold.reason}")
        messages.success(
            request, f"Released hold {hold.pk} ({who}): {hold.amount} credits for {hold.reason} are available again."
        )
