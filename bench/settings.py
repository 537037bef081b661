"""Settings for benchmark runs: the throwaway-run settings (testbed/settings.py) plus a baseline
view and the bench's own commands, on the bench database named by DATABASE_URL."""

from testbed.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]  # noqa: F405
ROOT_URLCONF = "bench.urls"
WSGI_APPLICATION = "bench.wsgi.application"
STRIPE_MAX_NETWORK_RETRIES = 0
