"""Settings for the credits site. Everything that differs between deployments comes from the
environment (see .env.example); with DEBUG off a missing secret stops start-up by name."""

import os
from pathlib import Path

import dj_database_url

from core import csp
from core.env import env_bool, env_list, env_required, load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent

# Development: a `.env` file in the project folder (`make run` writes one on its first run) fills in
# what the environment leaves unset; DOTENV_PATH names another file, or turns it off when empty.
load_dotenv(BASE_DIR / ".env")

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_required("SECRET_KEY", debug=DEBUG, dev_default="dev-only-insecure-secret-key-not-for-production")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("ALLOWED_HOSTS must be set in the environment when DEBUG is off")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.google",
    "django_tasks",
    "django_tasks_db",
    "accounts",
    "billing",
    "core",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "billing.middleware.AxiosCsrfMiddleware",  # the original React client's CSRF names (README, JSON API)
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "core.urls"
WSGI_APPLICATION = "core.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "billing.context_processors.billing",
                "accounts.context_processors.login_options",
                "core.context_processors.site",
            ],
        },
    },
]

# SQLite by default so a newcomer needs nothing; DATABASE_URL points anywhere else.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Writers wait for the lock instead of failing at once; IMMEDIATE takes the write lock at
    # BEGIN so two transactions never deadlock upgrading read locks.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}

# Background work (billing.tasks) through Django's tasks API: the database backend, so it needs no
# other service; `manage.py db_worker` runs the tasks (Procfile `worker`, `make run`). At scale,
# another backend (README "Background work") is a settings change.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# One cache for every worker and server: allauth's login throttling (ACCOUNT_RATE_LIMITS) counts
# attempts in it, and a per-process cache would let each gunicorn worker grant its own budget.
# The database by default (`migrate` makes its table: accounts/migrations/0003_cache_table.py);
# Redis when REDIS_URL is set.
REDIS_URL = os.environ.get("REDIS_URL", "").strip()
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "django_cache",
            # Past MAX_ENTRIES live rows the cache drops a third of them, throttle counts included:
            # Django's default (300) would let a flood of distinct logins wipe a victim's count.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# The site's wording over its libraries' (sentence case for allauth's "Sign In"...): locale/en.
LOCALE_PATHS = [BASE_DIR / "locale"]
# One 24-hour date and time style, the admin's included (core/formats/en/formats.py).
FORMAT_MODULE_PATH = ["core.formats"]

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# --- allauth: email login always, Google when its keys are set ---------------------------
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGOUT_ON_GET = False
# Development verifies optionally (mail goes to the console); production insists.
ACCOUNT_EMAIL_VERIFICATION = os.environ.get("ACCOUNT_EMAIL_VERIFICATION", "optional" if DEBUG else "mandatory")
ACCOUNT_ADAPTER = "accounts.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapters.SocialAccountAdapter"
# allauth's defaults, written out because they are the site's brute-force defence: failed logins
# per client address and per email (5 in 5 minutes locks that email out, the right password too).
# /admin/login/ goes through the same login (core/urls.py), so the admin is covered as well.
ACCOUNT_RATE_LIMITS = {
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/m/ip",
    "reset_password": "20/m/ip,5/m/key",
    "reset_password_from_key": "20/m/ip",
    "change_password": "5/m/user",
}
# Behind a proxy every request comes from the proxy's address; the per-address limits need the
# client's, from X-Forwarded-For (Heroku's router: 1 proxy). 0 trusts no header (direct traffic).
ALLAUTH_TRUSTED_PROXY_COUNT = int(os.environ.get("TRUSTED_PROXY_COUNT", "0"))
SOCIALACCOUNT_LOGIN_ON_GET = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True

GOOGLE_CLIENT_ID = os.environ.get("GOOGLE_CLIENT_ID", "").strip()
GOOGLE_CLIENT_SECRET = os.environ.get("GOOGLE_CLIENT_SECRET", "").strip()
SOCIALACCOUNT_PROVIDERS = {
    "google": {
        # Keys live in the environment, never in the database (no SocialApp rows).
        "APPS": (
            [{"client_id": GOOGLE_CLIENT_ID, "secret": GOOGLE_CLIENT_SECRET, "key": ""}]
            if GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET
            else []
        ),
        "SCOPE": ["profile", "email"],
        "AUTH_PARAMS": {"access_type": "online"},
    }
}

# --- email -------------------------------------------------------------------------------
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "credits@localhost")
# Where customers write for help: every page's footer and the password-reset page show it.
SUPPORT_EMAIL = os.environ.get("SUPPORT_EMAIL", "").strip() or DEFAULT_FROM_EMAIL
if os.environ.get("EMAIL_HOST"):
    EMAIL_HOST = os.environ["EMAIL_HOST"]
    EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "587"))
    EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

# --- Stripe --------------------------------------------------------------------------------
STRIPE_SECRET_KEY = env_required("STRIPE_SECRET_KEY", debug=DEBUG, dev_default="sk_test_local")
STRIPE_PUBLISHABLE_KEY = env_required("STRIPE_PUBLISHABLE_KEY", debug=DEBUG, dev_default="pk_test_local")
STRIPE_WEBHOOK_SECRET = env_required("STRIPE_WEBHOOK_SECRET", debug=DEBUG, dev_default="whsec_local")
# Unset means the real Stripe API; development and tests point it at localstripe.
STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "").strip() or None
STRIPE_JS_URL = os.environ.get("STRIPE_JS_URL", "").strip() or "https://js.stripe.com/v3/"
# A Stripe call and its retries must end well inside the web worker's timeout (gunicorn's
# --timeout, WEB_TIMEOUT in the Procfile), so that a Stripe that never answers gets the page our
# JSON 503 rather than a killed worker: worst case (retries + 1) x timeout + backoff, here about
# 17 s against 30 s. A system check refuses values that cannot fit (docs/RELIABILITY.md).
STRIPE_TIMEOUT_SECONDS = float(os.environ.get("STRIPE_TIMEOUT_SECONDS", "8"))
STRIPE_MAX_NETWORK_RETRIES = int(os.environ.get("STRIPE_MAX_NETWORK_RETRIES", "1"))
BILLING_WEB_TIMEOUT_SECONDS = int(os.environ.get("WEB_TIMEOUT", "30"))
# The pack /api/stripe charges (the original app's "$5 for 5 credits").
BILLING_DEFAULT_PACK = os.environ.get("BILLING_DEFAULT_PACK", "starter")
BILLING_LEDGER_PAGE_SIZE = 25
# PostgreSQL: the ledger's one statement as a server-side prepared statement (faster). Turn off
# behind a pooler in transaction mode that cannot keep prepared statements (PgBouncer < 1.21).
BILLING_LEDGER_PREPARED_STATEMENTS = env_bool("BILLING_LEDGER_PREPARED_STATEMENTS", True)
# Charge attempts per signed-in user: "<requests>/<seconds>", shared by every server (or "off").
BILLING_CHARGE_RATE_LIMIT = os.environ.get("BILLING_CHARGE_RATE_LIMIT", "10/60")
# The site's address, for the links in emails the worker sends (receipts, auto-recharge paused);
# in development the address `make run` serves.
BILLING_SITE_URL = os.environ.get("BILLING_SITE_URL", "").strip() or ("http://127.0.0.1:8000" if DEBUG else "")
BILLING_SELLER_NAME = os.environ.get("BILLING_SELLER_NAME", "").strip() or "Emaily Credits"
# A receipt email per purchase and a notice per refund (set 0 to send none).
BILLING_RECEIPT_EMAILS = env_bool("BILLING_RECEIPT_EMAILS", True)
# Credits each new user gets: "5" (never expire) or "3/30d" (valid 30 days); unset: none.
BILLING_SIGNUP_GRANT = os.environ.get("BILLING_SIGNUP_GRANT", "").strip() or None
# Stripe events acknowledged at once and credited by the task worker (the Procfile's `worker`);
# 0 credits them in the request, for a deployment that runs no worker. Unset: on (TASKS has a worker).
BILLING_WEBHOOKS_ASYNC = env_bool("BILLING_WEBHOOKS_ASYNC", None)

# --- security: strict only where HTTPS exists (DEBUG off) ---------------------------------
# The Content-Security-Policy core/middleware.py sends (Django 6's setting name and shape; billing's
# system check reads it to make sure Stripe.js is allowed).
SECURE_CSP = csp.directives(STRIPE_JS_URL, STRIPE_API_BASE)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", str(60 * 60 * 24 * 365)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
