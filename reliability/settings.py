"""Settings for the reliability scenarios: the throwaway-run settings (testbed/settings.py) on the
scenario's own PostgreSQL database, named by DATABASE_URL (set by the harness)."""

import os

from testbed.settings import *  # noqa: F403

# The scenarios retry nothing, so each fault's timing is exact; the server that checks the
# production timeouts (faults: "never answers") runs the production Stripe client as configured.
if os.environ.get("RELIABILITY_STRIPE_CLIENT") != "production":
    STRIPE_MAX_NETWORK_RETRIES = 0
