"""Test settings: the production settings module with test-only secrets from the environment.

The tests run with DEBUG off, as production does, so the same settings code is exercised;
the keys are fixed strings for the test run ("sk_test_suite"...), not secrets.
"""

from testbed.environment import set_throwaway_defaults

set_throwaway_defaults("suite")

from core.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast users in tests
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
STRIPE_MAX_NETWORK_RETRIES = 0
# Counted on every charge request as in production, but high enough that no test meets it by
# accident; tests/test_security_ratelimit.py sets its own low limits.
BILLING_CHARGE_RATE_LIMIT = "1000/60"
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
# Tasks run where they are enqueued, so a test sees their effect at once; tests/test_tasks.py also
# runs the project's database backend with a real worker.
TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
