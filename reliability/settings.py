"""Settings for the reliability scenarios: production settings (DEBUG off) on the scenario's
own PostgreSQL database, named by DATABASE_URL (set by the harness).

The values set here are fixed strings for throwaway databases, not secrets.
"""

import os

os.environ.setdefault("SECRET_KEY", "reliability-only-secret-key-for-a-throwaway-database")
os.environ.setdefault("STRIPE_SECRET_KEY", "sk_test_reliability")
os.environ.setdefault("STRIPE_PUBLISHABLE_KEY", "pk_test_reliability")
os.environ.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_reliability")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("ACCOUNT_EMAIL_VERIFICATION", "none")
os.environ.setdefault("LOG_LEVEL", "WARNING")

from core.settings import *  # noqa: E402,F403

# The scenarios serve no static files and have no collectstatic manifest.
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # throwaway users, made fast
# The scenarios retry nothing, so each fault's timing is exact; the server that checks the
# production timeouts (faults: "never answers") runs the production Stripe client as configured.
if os.environ.get("RELIABILITY_STRIPE_CLIENT") != "production":
    STRIPE_MAX_NETWORK_RETRIES = 0
