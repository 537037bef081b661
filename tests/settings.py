"""Test settings: the production settings module with test-only secrets from the environment.

The tests run with DEBUG off, as production does, so the same settings code is exercised;
these values are fixed strings for the test run, not secrets.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-only-for-the-test-suite")
os.environ.setdefault("STRIPE_SECRET_KEY", "sk_test_suite")
os.environ.setdefault("STRIPE_PUBLISHABLE_KEY", "pk_test_suite")
os.environ.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_test_suite")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("ACCOUNT_EMAIL_VERIFICATION", "none")

from core.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast users in tests
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
STRIPE_MAX_NETWORK_RETRIES = 0
# Counted on every charge request as in production, but high enough that no test meets it by
# accident; tests/test_security_ratelimit.py sets its own low limits.
BILLING_CHARGE_RATE_LIMIT = "1000/60"
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
