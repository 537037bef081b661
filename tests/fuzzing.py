"""Hypothesis settings and bookkeeping for the hostile-input tests (tests/test_fuzz_*.py).

Two sizes, picked by the environment:
- CI (default): a few hundred inputs in all, derandomized, so `make test` stays fast and stable;
- full (`RELIABILITY_FUZZ=full`, set by `make reliability`): over 10,000 inputs in all, random.

Every input a test sends is counted per target; with RELIABILITY_FUZZ_REPORT=<path> the counts
(and the outcomes each target saw) are written there as JSON when the test process ends, for
docs/RELIABILITY.md.
"""

from __future__ import annotations

import atexit
import json
import os
from collections import Counter, defaultdict

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# (CI, full) examples per target; the full column adds up to more than 10,000.
BUDGET = {
    "charge": (60, 2500),
    "api_stripe": (30, 1200),
    "confirm": (30, 1300),
    "webhook_signed": (60, 3000),
    "webhook_unsigned": (20, 800),
    "adjust_credits": (40, 1800),
    "show_credits": (20, 600),
    "grant_credits": (40, 1200),
    "reconcile_payments": (15, 300),
}

inputs: Counter = Counter()
outcomes: dict[str, Counter] = defaultdict(Counter)


def full() -> bool:
    return os.environ.get("RELIABILITY_FUZZ", "").strip().lower() == "full"


def fuzz_settings(target: str) -> settings:
    ci, big = BUDGET[target]
    return settings(
        max_examples=big if full() else ci,
        deadline=None,  # a request through the stack has no fixed time; the totals are what matter
        derandomize=not full(),
        database=None,  # no .hypothesis/ folder in the project; failures print their example
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,  # state is compared per example, not reset
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


def json_values(*, text: int, width: int, key: int, leaves: int) -> st.SearchStrategy:
    """Any JSON value: scalars (strings up to `text` characters) nested in lists and objects of up
    to `width` items (object keys up to `key` characters), `leaves` scalars at most."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=text)
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=width) | st.dictionaries(st.text(max_size=key), children, max_size=width)
        ),
        max_leaves=leaves,
    )


def record(target: str, outcome) -> None:
    """Count one input sent to `target` and what it got (a status code, "ok", "refused"...)."""
    inputs[target] += 1
    outcomes[target][str(outcome)] += 1


@atexit.register
def _write_report() -> None:
    path = os.environ.get("RELIABILITY_FUZZ_REPORT", "").strip()
    if not path or not inputs:
        return
    report = {"inputs": dict(inputs), "outcomes": {k: dict(v) for k, v in outcomes.items()}, "full": full()}
    with open(path, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)


# --- what a refused input must leave alone ----------------------------------------------------


def money_state() -> dict:
    """Balances, the ledger, payments and stored events, summed up in a few queries."""
    from django.db.models import Count, Sum

    from billing.models import LedgerEntry, Payment, Profile, StripeEvent

    return {
        "balances": dict(Profile.objects.values_list("user_id", "credits")),
        "ledger": LedgerEntry.objects.aggregate(n=Count("id"), total=Sum("delta")),
        "payments": dict(Payment.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n")),
        "payment_rows": list(
            Payment.objects.order_by("id").values_list("id", "status", "amount_refunded", "stripe_payment_intent_id")
        ),
        "events": dict(StripeEvent.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n")),
    }


def assert_ledger_invariant() -> None:
    """The ledger invariant (billing/ledger/invariants.py), every profile, and nothing below zero."""
    from billing.ledger.invariants import broken_profiles
    from billing.models import LedgerEntry, Profile

    assert list(broken_profiles()) == []
    assert not Profile.objects.filter(credits__lt=0).exists()
    assert not LedgerEntry.objects.filter(balance_after__lt=0).exists()
