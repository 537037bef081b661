"""Stripe webhook events, read-only: failed or held ones can be run again (an action). The list warns
about held events, and about failed ones the worker has stopped retrying."""

import json

from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.translation import gettext_lazy as _

from billing.admin.common import REPROCESS_PERMISSION, ReadOnlyAdmin
from billing.admin.paginator import LargeTablePaginator
from billing.models import StripeEvent
from billing.webhooks import reprocess_event
from billing.webhooks.queue import webhooks_async


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "type", "status", "api_version", "attempts", "received_at", "processed_at"]
    list_filter = ["status"]
    search_fields = ["=event_id", "type"]
    ordering = ["-id"]
    show_full_result_count = False
    paginator = LargeTablePaginator  # counts that stay cheap on millions of rows
    fields = [
        "event_id",
        "type",
        "status",
        "api_version",
        "error",
        "attempts",
        "received_at",
        "processed_at",
        "next_attempt_at",
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
        # A worker retries a failed event with backoff (billing.webhooks.queue), then stops: from
        # then on only staff run it, and Stripe will not send it again either (it was answered 200).
        given_up = StripeEvent.objects.filter(status=StripeEvent.Status.FAILED, next_attempt_at__isnull=True)
        if webhooks_async() and given_up.exists():
            messages.error(
                request,
                format_html(
                    '{} <a href="?{}">{}</a>',
                    _(
                        "Some Stripe events failed and will not be retried automatically: read each one's "
                        "error, fix the cause, then run it with the reprocess action."
                    ),
                    urlencode({"status__exact": StripeEvent.Status.FAILED}),
                    _("Show failed events"),
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
