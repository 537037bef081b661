from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self):
        from django.conf import settings

        from billing import signals  # noqa: F401  (connects the profile creator)
        from billing.ratelimit import parse_rate

        # A malformed limit stops start-up with the setting's name, not the first charge.
        parse_rate(settings.BILLING_CHARGE_RATE_LIMIT, name="BILLING_CHARGE_RATE_LIMIT")
