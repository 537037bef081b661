"""The admin's forms: the two ways staff change a balance (adjust, grant) and the pack form."""

from datetime import datetime, time, timedelta

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.ledger import MAX_DELTA
from billing.models import MAX_VALIDITY_DAYS, CreditGrant, CreditPack


class OneTimeForm(forms.Form):
    # One id per rendering of the form: a double-click or a resubmitted POST reuses it as the
    # ledger idempotency key, so the change is applied once.
    request_id = forms.UUIDField(widget=forms.HiddenInput)
    reason = forms.CharField(
        max_length=255,
        help_text=_(
            "Required. The customer sees this in their history: write it for them (no ticket numbers or "
            "notes). Your name is saved with it, for staff only."
        ),
        widget=forms.TextInput(attrs={"size": 60}),
    )

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError(_("A reason is required."))
        return reason


class AdjustCreditsForm(OneTimeForm):
    delta = forms.IntegerField(
        label=_("Change by"),
        min_value=-MAX_DELTA,
        max_value=MAX_DELTA,
        help_text=_("A whole number of credits: positive adds, negative removes (e.g. 5 or -3)."),
    )
    field_order = ["delta", "reason"]

    def clean_delta(self):
        delta = self.cleaned_data["delta"]
        if delta == 0:
            raise forms.ValidationError(_("Enter a non-zero number of credits."))
        return delta


class GrantCreditsForm(OneTimeForm):
    amount = forms.IntegerField(
        label=_("Credits"),
        min_value=1,
        max_value=MAX_DELTA,
        help_text=_("A whole number of credits to give, e.g. 5."),
    )
    category = forms.ChoiceField(
        choices=CreditGrant.Category.choices,
        initial=CreditGrant.Category.PROMOTIONAL,
        help_text=_("Promotional credits are spent before paid credits that expire at the same time."),
    )
    expires_in_days = forms.IntegerField(
        label=_("Expires in (days)"),
        required=False,
        min_value=1,
        max_value=MAX_VALIDITY_DAYS,
        help_text=_("Leave this and the date empty for credits that never expire."),
    )
    expires_on = forms.DateField(
        label=_("or expires after"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("A date (YYYY-MM-DD): the credits can be used until the end of that day."),
    )
    field_order = ["amount", "category", "expires_in_days", "expires_on", "reason"]

    def clean(self):
        cleaned = super().clean()
        days, day = cleaned.get("expires_in_days"), cleaned.get("expires_on")
        if days is not None and day is not None:
            raise forms.ValidationError(_("Give the expiry as a number of days or as a date, not both."))
        now = timezone.now()
        if days is not None:
            cleaned["expires_at"] = now + timedelta(days=days)
        elif day is not None:
            if day > (now + timedelta(days=MAX_VALIDITY_DAYS)).date():
                self.add_error("expires_on", _("Pick a date within 100 years."))
                return cleaned
            expires_at = timezone.make_aware(datetime.combine(day, time.max))
            if expires_at <= now:
                self.add_error("expires_on", _("Pick a date that has not passed."))
                return cleaned
            cleaned["expires_at"] = expires_at
        else:
            cleaned["expires_at"] = None
        return cleaned


class CreditPackForm(forms.ModelForm):
    class Meta:
        model = CreditPack
        fields = ["slug", "name", "credits", "amount", "currency", "validity_days", "active"]
        help_texts = {"currency": "Three-letter ISO code, e.g. usd."}

    def clean_validity_days(self):
        days = self.cleaned_data["validity_days"]
        if days is not None and days > MAX_VALIDITY_DAYS:
            raise forms.ValidationError(
                _("Credits can stay valid for at most %(days)s days.") % {"days": MAX_VALIDITY_DAYS}
            )
        return days

    def clean_currency(self):
        # Stored lower-case (as Stripe uses it); the database check would refuse "USD".
        return self.cleaned_data["currency"].strip().lower()
