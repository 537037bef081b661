"""The original React client's Google sign-in addresses, led into allauth's Google flow (README,
"JSON API"). The client links to `/auth/google`; Google may come back to `/auth/google/callback`."""

from http import HTTPStatus

from allauth.socialaccount.providers.google.views import oauth2_callback
from django.conf import settings
from django.shortcuts import redirect, render
from django.urls import reverse


def google_enabled() -> bool:
    return bool(settings.SOCIALACCOUNT_PROVIDERS["google"]["APPS"])


def google_login(request):
    """allauth's Google login page (it asks to continue, then POSTs to Google: no sign-in on a bare GET)."""
    if not google_enabled():
        return google_unavailable(request)
    url = reverse("google_login")
    if request.GET:  # e.g. ?next=/billing/
        url = f"{url}?{request.GET.urlencode()}"
    return redirect(url)


def google_callback(request):
    """allauth's own callback view, so Google may return here as well as to allauth's address."""
    if not google_enabled():
        return google_unavailable(request)
    return oauth2_callback(request)


def google_unavailable(request):
    return render(request, "account/google_unavailable.html", status=HTTPStatus.NOT_FOUND)
