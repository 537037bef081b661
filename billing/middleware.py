"""CSRF under the names axios uses, beside Django's own (README, "JSON API").

axios, the HTTP library of the original React client, reads a cookie named `XSRF-TOKEN` and sends
its value back in an `X-XSRF-TOKEN` header; Django reads `csrftoken` and `X-CSRFToken`. Renaming
Django's settings would break the site's own pages, so this middleware speaks both: it copies the
axios header into Django's header before the CSRF check, and writes an `XSRF-TOKEN` cookie holding
the same value as Django's CSRF cookie whenever that one is set, renewed or rotated (on login).

Nothing is loosened: the request still needs a cookie and a header that Django's own check
accepts. Place it just before `django.middleware.csrf.CsrfViewMiddleware`.
"""

from django.utils.cache import patch_vary_headers

from billing.conf import app_settings

XSRF_COOKIE_NAME = "XSRF-TOKEN"  # axios's default `xsrfCookieName`
XSRF_HEADER = "HTTP_X_XSRF_TOKEN"  # axios's default `xsrfHeaderName`, as Django names it in META


class AxiosCsrfMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        axios_token = request.META.get(XSRF_HEADER)
        if axios_token and app_settings.CSRF_HEADER_NAME not in request.META:
            request.META[app_settings.CSRF_HEADER_NAME] = axios_token
        response = self.get_response(request)
        self._keep_cookie_in_step(request, response)
        return response

    @staticmethod
    def _keep_cookie_in_step(request, response):
        if app_settings.CSRF_COOKIE_NAME == XSRF_COOKIE_NAME:
            return  # the project already names its CSRF cookie the axios way
        # Django's CSRF middleware has answered by now: this is the secret it checks against
        # (new, rotated on login, or the one the request's cookie carried).
        secret = request.META.get("CSRF_COOKIE")
        if not secret:
            return
        renewed = app_settings.CSRF_COOKIE_NAME in response.cookies
        if not renewed and request.COOKIES.get(XSRF_COOKIE_NAME) == secret:
            return
        response.set_cookie(
            XSRF_COOKIE_NAME,
            secret,
            max_age=app_settings.CSRF_COOKIE_AGE,
            domain=app_settings.CSRF_COOKIE_DOMAIN,
            path=app_settings.CSRF_COOKIE_PATH,
            secure=app_settings.CSRF_COOKIE_SECURE,
            httponly=False,  # axios reads it from JavaScript, whatever CSRF_COOKIE_HTTPONLY says
            samesite=app_settings.CSRF_COOKIE_SAMESITE,
        )
        patch_vary_headers(response, ("Cookie",))
