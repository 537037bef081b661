"""Settings for benchmark runs: production settings (DEBUG off) plus a baseline view and the
bench's own commands, on the bench database named by DATABASE_URL (set by the harness).

The values set here are fixed strings for a throwaway bench database, not secrets.
"""

import os

os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-for-a-throwaway-database")
os.environ.setdefault("STRIPE_SECRET_KEY", "sk_test_bench")
os.environ.setdefault("STRIPE_PUBLISHABLE_KEY", "pk_test_bench")
os.environ.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_bench")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("ACCOUNT_EMAIL_VERIFICATION", "none")
os.environ.setdefault("LOG_LEVEL", "WARNING")

from core.settings import *  # noqa: E402,F403

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]  # noqa: F405
ROOT_URLCONF = "bench.urls"
WSGI_APPLICATION = "bench.wsgi.application"
# The bench serves no static files and has no collectstatic manifest.
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # only bench users, made fast
STRIPE_MAX_NETWORK_RETRIES = 0
