from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request):
        return True


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request, sociallogin):
        return True

    def list_apps(self, request, provider=None, client_id=None):
        # Google is only offered when its keys are in the environment.
        if provider == "google" and not settings.SOCIALACCOUNT_PROVIDERS["google"]["APPS"]:
            return []
        return super().list_apps(request, provider=provider, client_id=client_id)
