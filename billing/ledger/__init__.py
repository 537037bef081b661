"""The one writer of balances.

Every change to `Profile.credits` goes through this package, and each one writes its
`LedgerEntry` in the same transaction, so the ledger invariant (`invariants.py`) always holds:
`credits` equals the sum of the profile's `delta`s and its newest entry's `balance_after`. A grep
for writes to `credits` outside `billing/ledger/` should find nothing.

The balance moves with a conditional UPDATE (`... WHERE credits + delta >= 0`), never
read-modify-write, so concurrent spenders in any number of processes can never take it below
zero. Idempotency comes from the unique `LedgerEntry.idempotency_key`: a repeat loses the insert
race at the database, its transaction (including its UPDATE) rolls back, and the first entry is
returned.

- `operations.py`: the public operations below, their validation and the retry loop;
- `purchases.py`: a purchase credited with its payment marked succeeded, in one statement;
- `grants.py`: credit grants, the drawdown order and expiry (docs/DESIGN.md, "Credit grants");
- `holds.py`: reserving credits now and capturing what was used later (docs/DESIGN.md, "Holds");
- `postgresql.py`: the writes on PostgreSQL, one prepared statement each (docs/DESIGN.md);
- `portable.py`: the same writes through the ORM on any other database (SQLite);
- `invariants.py`: the invariant as one set-based query, for audit_credits, tests and reliability/.
"""

from billing.ledger.holds import capture_hold, hold_credits, release_hold
from billing.ledger.operations import (
    MAX_DELTA,
    add_credits,
    adjust_credits,
    claw_back_credits,
    expire_credits,
    get_balance,
    grant_credits,
    reinstate_credits,
    spend_credits,
)
from billing.ledger.purchases import Purchase, credit_purchase

__all__ = [
    "MAX_DELTA",
    "Purchase",
    "add_credits",
    "adjust_credits",
    "capture_hold",
    "claw_back_credits",
    "credit_purchase",
    "expire_credits",
    "get_balance",
    "grant_credits",
    "hold_credits",
    "reinstate_credits",
    "release_hold",
    "spend_credits",
]
