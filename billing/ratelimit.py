"""`@rate_limited(scope)`: a per-user limit on the charge endpoints, shared by every process and
server that uses the same database.

Why: a charge endpoint is what card testers hammer (one stolen card number after another), and
each attempt costs a Stripe request. A limit in process memory would be multiplied by every
gunicorn worker and every machine, so the count lives in the database: one row per (bucket,
fixed window), incremented with a single atomic statement that both PostgreSQL and SQLite
(3.35+) understand:

    INSERT INTO billing_ratelimitcounter (bucket, window_start, expires_at, hits) VALUES (..., 1)
    ON CONFLICT (bucket, window_start) DO UPDATE SET hits = billing_ratelimitcounter.hits + 1
    RETURNING hits

No read-then-write, so concurrent requests on any number of servers each get their own count.
Ended windows are cleared by `clear_ended_windows`, billing's periodic job (billing.periodic),
not by the request: a charge pays for its count and nothing else.
django-ratelimit on Django's database cache counts with a read, then a write, and let 34-40 of
40 simultaneous attempts through a limit of 10 (docs/RELIABILITY.md, "The charge rate limiter"),
so the count stays here, in the database every installation already has.
The limit is `app_settings.BILLING_CHARGE_RATE_LIMIT`, "<requests>/<seconds>" (e.g. "10/60"), or
"off". Over the limit the view is not called: 429 JSON with a clear message and Retry-After.
"""

from __future__ import annotations

import math
import time
from functools import wraps
from http import HTTPStatus

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router
from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from billing.conf import app_settings
from billing.models import RateLimitCounter

OFF = ("", "0", "off", "none")


def parse_rate(value, *, name: str = "the rate limit") -> tuple[int, int] | None:
    """ "10/60" -> (10, 60); "off" -> None. Anything else is a configuration error."""
    text = str(value if value is not None else "").strip().lower()
    if text in OFF:
        return None
    try:
        requests, seconds = (int(part) for part in text.split("/"))
    except ValueError:
        requests = seconds = 0
    if requests <= 0 or seconds <= 0:
        raise ImproperlyConfigured(
            f"{name} must be '<requests>/<seconds>' with both positive (e.g. '10/60'), or 'off'; got {value!r}"
        )
    return requests, seconds


def hit(bucket: str, *, limit: int, period: int, now: float | None = None) -> tuple[bool, int]:
    """Count one request for `bucket` in the current window, in one statement. Returns (allowed,
    seconds until the window ends). Commits at once when no transaction is open, so other
    processes see it."""
    now = time.time() if now is None else now
    window_start = int(now) // period * period
    expires_at = window_start + period
    alias = router.db_for_write(RateLimitCounter)
    connection = connections[alias]
    table = connection.ops.quote_name(RateLimitCounter._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (bucket, window_start, expires_at, hits) VALUES (%s, %s, %s, 1) "  # noqa: S608 - table name from the model
            f"ON CONFLICT (bucket, window_start) DO UPDATE SET hits = {table}.hits + 1 RETURNING hits",
            [bucket, window_start, expires_at],
        )
        hits = cursor.fetchone()[0]
    retry_after = max(1, math.ceil(expires_at - now))
    return hits <= limit, retry_after


def clear_ended_windows(now: float | None = None) -> int:
    """Delete the counts of windows that have ended, for every bucket (billing.periodic runs it
    every few minutes, so the table stays about as small as the number of recently active
    users). Returns the rows deleted."""
    now = time.time() if now is None else now
    deleted, _ = RateLimitCounter.objects.filter(expires_at__lte=int(now)).delete()
    return deleted


def _in_words(seconds: int) -> str:
    if seconds < 120:
        return ngettext("%(n)d second", "%(n)d seconds", seconds) % {"n": seconds}
    if seconds < 2 * 3600:
        return _("about %(n)d minutes") % {"n": math.ceil(seconds / 60)}
    return _("about %(n)d hours") % {"n": math.ceil(seconds / 3600)}


def rate_limited(scope: str, *, setting: str = "BILLING_CHARGE_RATE_LIMIT"):
    """Limit each signed-in user's POSTs to the view, per `scope` (views sharing a scope share
    the budget). Anonymous requests and other methods pass through: the view answers them
    (401, 405) and they cost nothing. CSRF failures never reach here (the middleware runs first).
    """

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            rate = parse_rate(getattr(app_settings, setting, None), name=setting)
            user = getattr(request, "user", None)
            if rate is None or request.method != "POST" or user is None or not user.is_authenticated:
                return view(request, *args, **kwargs)
            limit, period = rate
            allowed, retry_after = hit(f"{scope}:user:{user.pk}", limit=limit, period=period)
            if allowed:
                return view(request, *args, **kwargs)
            response = JsonResponse(
                {
                    "error": _("Too many payment attempts. Please wait %(wait)s and try again.")
                    % {"wait": _in_words(retry_after)},
                    "retry_after": retry_after,
                },
                status=HTTPStatus.TOO_MANY_REQUESTS,
            )
            response["Retry-After"] = str(retry_after)
            return response

        return wrapper

    return decorator
