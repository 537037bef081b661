"""Credit grants, read-only: what each balance is made of, which are open, used up or expired,
and (on a grant's page) every ledger entry that drew on it."""

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from billing.admin.common import EmailSearchMixin, ReadOnlyAdmin, WideListMixin, admin_time
from billing.admin.paginator import LargeTablePaginator
from billing.models import CreditGrant
from billing.users import display_name, lookup_fields


class GrantStateFilter(admin.SimpleListFilter):
    """Open (credits left, not expired), expired (its expiry has passed), used up (nothing left)."""

    title = _("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("open", _("Open")),
            ("expired", _("Expired")),
            ("used", _("Used up")),
            ("never", _("Never expires")),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        value = self.value()
        if value == "open":
            return queryset.filter(remaining__gt=0).exclude(expires_at__lte=now)
        if value == "expired":
            return queryset.filter(expires_at__lte=now)
        if value == "used":
            return queryset.filter(remaining=0).exclude(expires_at__lte=now)
        if value == "never":
            return queryset.filter(expires_at__isnull=True)
        return queryset


@admin.register(CreditGrant)
class CreditGrantAdmin(WideListMixin, EmailSearchMixin, ReadOnlyAdmin):
    email_search_user_path = "profile__user_id"
    search_help_text = _("A whole email address (fast), or part of one.")
    list_display = ["id", "created_at", "email", "category", "source", "amount", "remaining", "expires", "payment"]
    list_display_links = ["id"]
    list_select_related = ["profile__user", "payment"]
    list_filter = ["category", "source", GrantStateFilter]
    show_facets = admin.ShowFacets.NEVER  # per-choice counts would scan every grant
    search_fields = [f"profile__user__{field}" for field in lookup_fields()]
    ordering = ["-id"]
    show_full_result_count = False
    paginator = LargeTablePaginator  # counts that stay cheap on millions of rows
    list_per_page = 50
    fields = [
        "id",
        "profile",
        "category",
        "source",
        "amount",
        "remaining",
        "expires_at",
        "payment",
        "entry",
        "created_at",
        "draws",
    ]
    readonly_fields = fields

    @admin.display(description=_("user"))
    def email(self, grant):
        return display_name(grant.profile.user)

    @admin.display(description=_("expires"), ordering="expires_at")
    def expires(self, grant):
        if grant.expires_at is None:
            return _("never")
        moment = admin_time(grant.expires_at)
        return format_html("{} ({})", moment, _("expired")) if grant.expires_at <= timezone.now() else moment

    @admin.display(description=_("ledger entries that drew on it"))
    def draws(self, grant):
        allocations = list(grant.allocations.select_related("entry").order_by("entry_id")[:100])
        if not allocations:
            return "-"
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:billing_ledgerentry_change", args=[allocation.entry_id]),
                    allocation.entry_id,
                    admin_time(allocation.entry.created_at),
                    allocation.entry.get_kind_display(),
                    f"{'+' if allocation.entry.delta > 0 else '-'}{allocation.amount}",
                    allocation.entry.reason,
                )
                for allocation in allocations
            ),
        )
        return format_html(
            "<table><thead><tr><th>Entry</th><th>When</th><th>Kind</th><th>Credits</th><th>Reason</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )
