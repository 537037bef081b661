"""Settings for runs on a throwaway database (the bench, the reliability scenarios): the production
settings (DEBUG off), so the code measured and attacked is the code that ships, on the database
DATABASE_URL names (set by the harness). bench/settings.py and reliability/settings.py add what
their runs need.
"""

from testbed.environment import set_throwaway_defaults

set_throwaway_defaults("testbed", LOG_LEVEL="WARNING")

from core.settings import *  # noqa: E402,F403

# No static files are served and there is no collectstatic manifest.
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # throwaway users, made fast
