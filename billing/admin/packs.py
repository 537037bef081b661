"""Credit packs: the only editable billing model (what is for sale, its price and validity)."""

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from billing.admin.forms import CreditPackForm
from billing.models import CreditPack
from billing.templatetags.billing_money import money


@admin.register(CreditPack)
class CreditPackAdmin(admin.ModelAdmin):
    form = CreditPackForm
    list_display = ["name", "slug", "credits", "price", "validity_days", "active"]
    list_filter = ["active"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}

    @admin.display(description=_("price"), ordering="amount")
    def price(self, pack):
        return money(pack.amount, pack.currency)
