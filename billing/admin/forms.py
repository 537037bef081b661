"""The admin's forms: the two ways staff change a balance (adjust, grant) and the pack form."""

from datetime import datetime, time, timedelta

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.ledger import MAX_DELTA
from billing.models import MAX_VALIDITY_DAYS, CreditGrant, CreditPack, LedgerEntry


class OneTimeForm(forms.Form):
    # One id per rendering of the form: a double-click or a resubmitted POST reuses it as the
    # ledger idempotency key, so the change is applied once.
    request_id = forms.UUIDField(widget=forms.HiddenInput)
    reason = forms.CharField(
        label=_("Customer description"),
        max_length=255,
        required=False,
        help_text=_(
            "Shown to the customer on their billing page: write it for them, without ticket numbers or "
            "notes. Left empty, it reads \u201c%(default)s\u201d."
        ),
        widget=forms.TextInput(attrs={"size": 60}),
    )
    staff_note = forms.CharField(
        label=_("Staff note"),
        max_length=LedgerEntry._meta.get_field("staff_note").max_length,
        help_text=_("Staff only: who asked, ticket number. The customer never sees it. Your name is saved with it."),
        widget=forms.TextInput(attrs={"size": 60}),
        error_messages={"required": _("A staff note is required: who asked, and why.")},
    )
    # The customer's description when staff leave it empty: a plain sentence for them.
    default_reason = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields["reason"]
        field.help_text = field.help_text % {"default": self.default_reason}
        field.widget.attrs["placeholder"] = self.default_reason

    def clean_reason(self):
        return self.cleaned_data["reason"].strip() or str(self.default_reason)


class AdjustCreditsForm(OneTimeForm):
    delta = forms.IntegerField(
        label=_("Change by"),
        min_value=-MAX_DELTA,
        max_value=MAX_DELTA,
        help_text=_("A whole number of credits: positive adds, negative removes (e.g. 5 or -3)."),
    )
    default_reason = _("Adjustment by support")
    field_order = ["delta", "reason", "staff_note"]

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
    default_reason = _("Bonus credits")
    field_order = ["amount", "category", "expires_in_days", "expires_on", "reason", "staff_note"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["staff_note"].required = False  # a grant may be routine (a promotion); an adjustment never is

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
