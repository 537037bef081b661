"""What every page of the site shows besides billing's header: the support contact in the footer."""

from django.conf import settings


def site(request):
    return {"support_email": settings.SUPPORT_EMAIL}
