from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.http import Http404


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

    def get_app(self, request, provider, client_id=None):
        # Without keys, /accounts/google/login/ and its callback are pages that do not exist here
        # (a 404), not the server error allauth's SocialApp.DoesNotExist would become.
        from allauth.socialaccount.models import SocialApp

        try:
            return super().get_app(request, provider, client_id=client_id)
        except SocialApp.DoesNotExist:
            raise Http404(f"Sign-in with {provider} is not enabled on this site.") from None
