"""The ledger, read-only: every change to a balance, and for each debit the grants it drew on."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from billing.admin.common import EmailSearchMixin, ReadOnlyAdmin, WideListMixin, admin_time
from billing.admin.paginator import LargeTablePaginator
from billing.models import LedgerEntry
from billing.users import display_name, lookup_fields


@admin.register(LedgerEntry)
class LedgerEntryAdmin(WideListMixin, EmailSearchMixin, ReadOnlyAdmin):
    email_search_user_path = "profile__user_id"
    search_help_text = _(
        "A whole email address (fast), or part of an email, reason or staff note, or an exact idempotency key "
        "(scans the ledger)."
    )
    list_display = ["id", "when", "email", "kind", "signed_delta", "balance", "reason", "staff_note", "actor"]
    list_display_links = ["id"]
    sortable_by = ["id"]  # the only order a million rows can be sorted in by an index
    show_facets = admin.ShowFacets.NEVER  # per-choice counts would scan the whole ledger
    list_select_related = ["profile__user", "actor"]
    # `kind` has fixed choices, so this filter costs no query of its own.
    list_filter = ["kind"]
    search_fields = [
        *(f"profile__user__{field}" for field in lookup_fields()),
        "reason",
        "staff_note",
        "=idempotency_key",
    ]
    ordering = ["-id"]
    show_full_result_count = False
    paginator = LargeTablePaginator  # counts that stay cheap on millions of rows
    list_per_page = 50
    fields = [
        "id",
        "created_at",
        "profile",
        "kind",
        "delta",
        "balance_after",
        "reason",
        "staff_note",
        "actor",
        "payment",
        "idempotency_key",
        "grants",
    ]
    readonly_fields = fields

    @admin.display(description=_("user"))
    def email(self, entry):
        return display_name(entry.profile.user)

    @admin.display(description=_("created"))
    def when(self, entry):
        return admin_time(entry.created_at)

    @admin.display(description=_("delta"))
    def signed_delta(self, entry):
        return f"{entry.delta:+d}"

    @admin.display(description=_("balance"))
    def balance(self, entry):
        # "balance after" would widen a column of short numbers and squeeze the reason at 1280 px.
        return entry.balance_after

    @admin.display(description=_("credit grants"))
    def grants(self, entry):
        """The grant this entry opened, or the grants it drew on (or, for a reinstatement, gave back to)."""
        opened = getattr(entry, "opened_grant", None) if entry.delta > 0 else None
        if opened is not None:
            return format_html('Opened <a href="{}">{}</a>.', _grant_url(opened.pk), opened)
        allocations = list(entry.allocations.select_related("grant").order_by("grant_id"))
        if not allocations:
            return "-"
        verb = "Gave back to" if entry.delta > 0 else "Drew on"
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">grant {}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    _grant_url(allocation.grant_id),
                    allocation.grant_id,
                    allocation.grant.get_category_display(),
                    allocation.amount,
                    _when(allocation.grant.expires_at),
                )
                for allocation in allocations
            ),
        )
        return format_html(
            "<p>{}:</p><table><thead><tr><th>Grant</th><th>Category</th><th>Credits</th><th>Expires</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            verb,
            rows,
        )


def _grant_url(grant_id) -> str:
    return reverse("admin:billing_creditgrant_change", args=[grant_id])


def _when(moment) -> str:
    return admin_time(moment) if moment else "never"
