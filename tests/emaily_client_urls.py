"""The site's URLs plus a page standing in for the original React client (browser tests only):
the real axios from npm (tests/emaily_client/node_modules) and the client's own action creators."""

from pathlib import Path

from django.http import FileResponse, Http404, HttpResponse
from django.urls import path

from core.urls import urlpatterns as site_urlpatterns

CLIENT = Path(__file__).resolve().parent / "emaily_client"
SCRIPTS = {
    "axios016": CLIENT / "node_modules" / "axios016" / "dist" / "axios.min.js",  # the version the client pins
    "axios": CLIENT / "node_modules" / "axios" / "dist" / "axios.min.js",  # a current 1.x
    "actions": CLIENT / "actions.js",
}
AXIOS_VERSIONS = ("axios016", "axios")


def client_page(request, axios):
    if axios not in AXIOS_VERSIONS:
        raise Http404(axios)
    # Scripts from this origin only: the site's Content-Security-Policy applies here too.
    return HttpResponse(
        "<!doctype html><html><head><meta charset='utf-8'><title>Emaily</title></head>"
        "<body><header id='header'></header>"
        f"<script src='/_emaily/{axios}.js'></script><script src='/_emaily/actions.js'></script>"
        "</body></html>"
    )


def script(request, name):
    if name not in SCRIPTS:
        raise Http404(name)
    return FileResponse(SCRIPTS[name].open("rb"), content_type="text/javascript")


urlpatterns = [
    path("_emaily/<str:axios>/", client_page),
    path("_emaily/<str:name>.js", script),
    *site_urlpatterns,
]
