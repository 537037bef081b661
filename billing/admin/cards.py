"""Saved cards and auto-recharge settings, read-only: what a customer saved and agreed to, for staff
answering "why was my card charged?". Both are written by billing.cards and billing.autorecharge
only; the customer changes them on /billing/."""

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from billing.admin.common import EmailSearchMixin, ReadOnlyAdmin, WideListMixin, admin_time
from billing.models import AutoRecharge, SavedCard
from billing.users import display_name, lookup_fields


@admin.register(SavedCard)
class SavedCardAdmin(WideListMixin, EmailSearchMixin, ReadOnlyAdmin):
    email_search_user_path = "profile__user_id"
    search_help_text = _("A whole email address (fast), or part of one.")
    list_display = ["id", "email", "card", "expiry", "saved"]
    list_display_links = ["id"]
    list_select_related = ["profile__user"]
    search_fields = [f"profile__user__{field}" for field in lookup_fields()]
    ordering = ["-id"]
    show_full_result_count = False
    list_per_page = 50
    fields = ["id", "profile", "brand", "last4", "expiry", "stripe_payment_method_id", "created_at"]
    readonly_fields = fields

    @admin.display(description=_("user"))
    def email(self, card):
        return display_name(card.profile.user)

    @admin.display(description=_("card"))
    def card(self, card):
        return f"{(card.brand or _('card')).capitalize()} •••• {card.last4}"

    @admin.display(description=_("expires"))
    def expiry(self, card):
        return f"{card.exp_month:02d}/{card.exp_year}"

    @admin.display(description=_("saved"), ordering="created_at")
    def saved(self, card):
        return admin_time(card.created_at)


@admin.register(AutoRecharge)
class AutoRechargeAdmin(WideListMixin, EmailSearchMixin, ReadOnlyAdmin):
    email_search_user_path = "profile__user_id"
    search_help_text = _("A whole email address (fast), or part of one.")
    list_display = ["id", "email", "state", "threshold", "pack", "monthly_limit", "consented"]
    list_display_links = ["id"]
    list_select_related = ["profile__user", "pack"]
    list_filter = ["enabled"]
    show_facets = admin.ShowFacets.NEVER  # per-choice counts would scan every setting
    search_fields = [f"profile__user__{field}" for field in lookup_fields()]
    ordering = ["-id"]
    show_full_result_count = False
    list_per_page = 50
    fields = [
        "id",
        "profile",
        "state",
        "pack",
        "threshold",
        "monthly_limit",
        "consent_text",
        "consented_at",
        "consecutive_failures",
        "paused_at",
        "paused_reason",
        "updated_at",
    ]
    readonly_fields = fields

    @admin.display(description=_("user"))
    def email(self, setting):
        return display_name(setting.profile.user)

    @admin.display(description=_("state"))
    def state(self, setting):
        if setting.paused_at:
            return _("Paused")
        return _("On") if setting.enabled else _("Off")

    @admin.display(description=_("agreed"), ordering="consented_at")
    def consented(self, setting):
        return admin_time(setting.consented_at) if setting.consented_at else "-"
