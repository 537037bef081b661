from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path

from accounts import views as accounts_views
from core import views

# Django's own admin login has no brute-force protection; this sends it through allauth's login,
# which ACCOUNT_RATE_LIMITS throttles (see the README, "Configuration").
admin.site.login = secure_admin_login(admin.site.login)

urlpatterns = [
    path("", views.home, name="home"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("fortune/", views.fortune, name="fortune"),
    path("fortune/long/", views.long_fortune, name="long_fortune"),
    path("billing/", include("billing.urls")),
    path("api/", include("billing.urls_emaily")),
    path("accounts/", include("allauth.urls")),
    # The original React client's Google sign-in addresses (README, JSON API).
    path("auth/google", accounts_views.google_login, name="auth_google"),
    path("auth/google/callback", accounts_views.google_callback, name="auth_google_callback"),
    path("admin/", admin.site.urls),
]
