"""The environment a throwaway run gives the production settings, so they load with DEBUG off
and the code under test, measurement or attack is the code that ships."""

import os


def set_throwaway_defaults(suite: str, **extra: str) -> None:
    """Fixed keys and hosts for `suite` (test-mode shaped: "sk_test_<suite>"...), unless the
    environment already has them. Throwaway strings for throwaway databases, not secrets."""
    defaults = {
        "SECRET_KEY": f"{suite}-only-secret-key-for-a-throwaway-database",
        "STRIPE_SECRET_KEY": f"sk_test_{suite}",
        "STRIPE_PUBLISHABLE_KEY": f"pk_test_{suite}",
        "STRIPE_WEBHOOK_SECRET": f"whsec_{suite}",
        "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "BILLING_SITE_URL": "http://testserver",
        "SECURE_SSL_REDIRECT": "0",
        "ACCOUNT_EMAIL_VERIFICATION": "none",
        **extra,
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    # Never a developer's `.env` (core/env.py): a throwaway run's settings are these and the environment's.
    os.environ["DOTENV_PATH"] = ""
