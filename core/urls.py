from django.contrib import admin
from django.urls import include, path

from core import views

urlpatterns = [
    path("", views.home, name="home"),
    path("fortune/", views.fortune, name="fortune"),
    path("billing/", include("billing.urls")),
    path("api/", include("billing.urls_emaily")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
]
