"""Hostile input, property-based, on the staff commands' arguments (adjust_credits, grant_credits,
show_credits, expire_credits, reconcile_payments, audit_credits): any email, number, reason or
option a hurried operator (or a script gone wrong) could type. Properties: the command either
does exactly what was asked or stops with a CommandError (a clear message, non-zero exit), never
another exception; on an error nothing changes; read-only commands never change anything."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from hypothesis import given
from hypothesis import strategies as st

from billing import ledger
from billing.models import CreditGrant, CreditPack, LedgerEntry, Payment
from tests import fuzzing

TEXT = st.text(max_size=60)
VALID_EMAILS = st.sampled_from(["alice@example.com", "ALICE@example.com", " alice@example.com ", "bob@example.com"])
EMAILS = st.one_of(
    VALID_EMAILS,
    VALID_EMAILS,
    VALID_EMAILS,
    st.sampled_from(["nobody@example.com", "alice@example.com\x00", "-alice@example.com", "alice", "%", "*"]),
    TEXT,
)
NUMBERS = st.one_of(
    st.integers(min_value=-20, max_value=20).map(str),
    st.integers(min_value=-20, max_value=20).map(str),
    st.integers(min_value=-20, max_value=20).map(str),
    st.integers().map(str),
    st.sampled_from(["0", "-0", "+5", " 5 ", "5_000", "1e3", "1.5", "0x10", "٣", "", "-", "NaN", "inf"]),
    st.sampled_from([str(2**31), str(-(2**31)), str(2**63), str(10**30), str(-(10**30)), "9" * 5000]),
    TEXT,
)
REASONS = st.one_of(
    st.just("goodwill"),
    st.just("goodwill"),
    st.sampled_from(["goodwill", " ", "", "a" * 300, "line\nbreak", "nul\x00byte", "-x", "--reason"]),
    TEXT,
)


@pytest.fixture
def people(user, other_user, make_user):
    ledger.add_credits(user, 10, kind=LedgerEntry.Kind.BONUS, reason="opening")
    make_user("staff@example.com", is_staff=True)
    return user


def run(*args):
    """(outcome, output): "ok" or "error" (a CommandError); anything else raises."""
    out, err = StringIO(), StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
    except CommandError as exc:
        assert str(exc).strip(), "a CommandError says what was wrong"
        return "error", str(exc)
    return "ok", out.getvalue()


def entries():
    return list(LedgerEntry.objects.order_by("id").values_list("id", "delta", "kind", "reason"))


@fuzzing.fuzz_settings("adjust_credits")
@given(
    email=EMAILS,
    delta=NUMBERS,
    reason=REASONS,
    actor=st.one_of(st.none(), st.sampled_from(["staff@example.com", "alice@example.com"]), TEXT),
)
def test_fuzz_adjust_credits(people, email, delta, reason, actor):
    before = fuzzing.money_state()
    old = entries()
    args = ["adjust_credits", email, delta, "--reason", reason] + (["--actor", actor] if actor is not None else [])
    outcome, output = run(*args)
    fuzzing.record("adjust_credits", outcome)
    if outcome == "error":
        assert fuzzing.money_state() == before, output
    else:
        new = [e for e in entries() if e not in old]
        assert len(new) == 1, new
        _, applied, kind, stored_reason = new[0]
        assert kind == "adjustment"
        assert applied == int(delta.strip()) != 0
        assert stored_reason == reason.strip()
    fuzzing.assert_ledger_invariant()


@fuzzing.fuzz_settings("grant_credits")
@given(
    email=EMAILS,
    amount=NUMBERS,
    reason=REASONS,
    category=st.one_of(st.none(), st.sampled_from(["paid", "promotional", "PAID", " paid ", "gold", ""]), TEXT),
    days=st.one_of(st.none(), NUMBERS),
)
def test_fuzz_grant_credits(people, email, amount, reason, category, days):
    before = fuzzing.money_state()
    old = entries()
    args = ["grant_credits", email, amount, "--reason", reason]
    args += ["--category", category] if category is not None else []
    args += ["--expires-in-days", days] if days is not None else []
    outcome, output = run(*args)
    fuzzing.record("grant_credits", outcome)
    if outcome == "error":
        assert fuzzing.money_state() == before, output
    else:
        new = [e for e in entries() if e not in old]
        assert len(new) == 1, new
        entry_id, applied, kind, stored_reason = new[0]
        assert kind == LedgerEntry.Kind.BONUS
        assert applied == int(amount.strip()) > 0
        assert stored_reason == reason.strip()
        grant = CreditGrant.objects.get(entry_id=entry_id)
        assert grant.category == (category or "promotional").strip().lower()
        assert (grant.expires_at is None) == (days is None)
    fuzzing.assert_ledger_invariant()
    # Nothing granted here has expired: a sweep in between finds nothing and changes nothing.
    assert run("expire_credits") == ("ok", "0 credits expired.\n")


@fuzzing.fuzz_settings("show_credits")
@given(email=EMAILS, limit=st.one_of(st.none(), NUMBERS))
def test_fuzz_show_credits(people, email, limit):
    before = fuzzing.money_state()
    outcome, output = run("show_credits", email, *(["--limit", limit] if limit is not None else []))
    fuzzing.record("show_credits", outcome)
    if outcome == "ok":
        assert "credits" in output
    assert fuzzing.money_state() == before


@pytest.fixture
def unsettled(people, localstripe):
    """A payment reconcile cannot settle (it never reached Stripe: no intent names it), so every
    run, real or dry, leaves it alone."""
    # An odd price: the session's localstripe holds other tests' intents, whose metadata can name
    # the same (reused) payment and user ids; reconcile matches a lost intent on the price too.
    pack = CreditPack.objects.create(slug="odd", name="Odd", credits=3, amount=777, currency="usd")
    return Payment.objects.create(user=people, pack=pack, credits=3, amount=777, currency="usd", status="pending")


@fuzzing.fuzz_settings("reconcile_payments")
@given(
    since=st.one_of(st.none(), NUMBERS),
    dry_run=st.booleans(),
    extra=st.one_of(
        st.just([]),
        st.just([]),
        st.lists(st.one_of(TEXT, st.sampled_from(["--since-days", "--dry-run", "-v", "3"])), min_size=1, max_size=2),
    ),
)
def test_fuzz_reconcile_and_audit(unsettled, since, dry_run, extra):
    before = fuzzing.money_state()
    args = ["reconcile_payments", *(["--since-days", since] if since is not None else [])]
    args += ["--dry-run"] if dry_run else []
    outcome, _ = run(*args, *extra)
    fuzzing.record("reconcile_payments", outcome)
    assert fuzzing.money_state() == before
    audit, output = run("audit_credits", *extra)
    if not extra:
        assert audit == "ok", output
    assert fuzzing.money_state() == before
