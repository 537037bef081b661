"""The site's URLs plus the baseline the webhook is measured against: a trivial view on the
same server, behind the same middleware. Bench-only; production never routes here."""

from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def trivial(request):
    return HttpResponse(b"ok", content_type="text/plain")


urlpatterns = [
    path("bench/trivial/", trivial, name="bench-trivial"),
    path("", include("core.urls")),
]
