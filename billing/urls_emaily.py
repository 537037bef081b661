"""The JSON API of the original Emaily React client, for projects that want it:
`path("api/", include("billing.urls_emaily"))`. The views live in billing/api.py."""

from django.urls import path

from billing import api

urlpatterns = [
    path("current_user", api.current_user, name="api_current_user"),
    path("stripe", api.stripe_charge, name="api_stripe"),
    path("logout", api.logout, name="api_logout"),
]
