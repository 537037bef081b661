"""What the admin modules share: permission names, the email search, read-only admins."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models.functions import Lower
from django.utils import formats, timezone

from billing.users import email_field

ADJUST_PERMISSION = "billing.adjust_credits"
GRANT_PERMISSION = "billing.grant_credits"
REFUND_PERMISSION = "billing.refund_payment"
RELEASE_PERMISSION = "billing.release_hold"
# Events are never edited; "change" on them is the right to rerun a failed one.
REPROCESS_PERMISSION = "billing.change_stripeevent"


def admin_time(moment) -> str:
    """A moment as the admin shows every other one (the project's DATETIME_FORMAT, in its time
    zone), so billing's own columns never mix a second style into the list and change pages."""
    return formats.date_format(timezone.localtime(moment), "DATETIME_FORMAT")


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


class WideListMixin:
    """For changelists with many columns. At 1280 px the admin's app sidebar and the filter
    column leave such a table about 630 px and it clips its last columns, so these lists go
    without the app sidebar (the breadcrumbs still lead back) and billing/admin/lists.css keeps
    dates, emails and amounts on one line and gives free text the room that is left."""

    class Media:
        css = {"all": ["billing/admin/lists.css"]}

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"is_nav_sidebar_enabled": False, **(extra_context or {})})


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable by staff with the view permission; nobody adds, changes or deletes here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ProfilePartInline(admin.TabularInline):
    """A read-only list on a profile's page of what its balance is made of (grants, holds):
    whoever may see the profile may see it; nobody adds, changes or deletes it here."""

    extra = 0
    can_delete = False
    show_change_link = True

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("billing.view_profile") or request.user.has_perm("billing.change_profile")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
