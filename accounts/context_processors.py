from django.conf import settings


def login_options(request):
    return {"google_login_enabled": bool(settings.SOCIALACCOUNT_PROVIDERS["google"]["APPS"])}
