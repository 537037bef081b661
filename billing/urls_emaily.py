"""The JSON API of the original Emaily React client, for projects that want it:
`path("api/", include("billing.urls_emaily"))`. The views live in billing/emaily_views.py."""

from django.urls import path

from billing import emaily_views

urlpatterns = [
    path("current_user", emaily_views.current_user, name="api_current_user"),
    path("stripe", emaily_views.stripe_charge, name="api_stripe"),
    path("logout", emaily_views.logout, name="api_logout"),
]
