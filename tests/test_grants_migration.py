"""Upgrading a database that has real history: every balance the old single-balance ledger left
becomes one never-expiring paid grant, and audit_credits is clean before and after.

The history is written the way the old ledger wrote it (billing/ledger before grants: the
balance moved with an F() update and an entry appended with its balance_after), through the
models as they were at that migration, on whichever database the suite runs on."""

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import F
from django.utils import timezone

from billing import ledger
from billing.ledger.invariants import broken_profiles, grant_problems
from billing.models import CreditGrant

BEFORE_GRANTS = ("billing", "0007_reinstatement_pack_messages")

pytestmark = pytest.mark.django_db(transaction=True)


def old_ledger_write(apps, profile, delta, kind, reason, payment=None):
    Profile, LedgerEntry = apps.get_model("billing", "Profile"), apps.get_model("billing", "LedgerEntry")
    Profile.objects.filter(pk=profile.pk, credits__gte=-delta).update(credits=F("credits") + delta)
    balance = Profile.objects.values_list("credits", flat=True).get(pk=profile.pk)
    LedgerEntry.objects.create(
        profile=profile, delta=delta, balance_after=balance, kind=kind, reason=reason, payment=payment,
        created_at=timezone.now(),
    )  # fmt: skip


def test_old_balances_become_one_paid_grant_each():
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE_GRANTS])
    old = executor.loader.project_state([BEFORE_GRANTS]).apps
    User, Profile = old.get_model("accounts", "User"), old.get_model("billing", "Profile")
    Payment, CreditPack = old.get_model("billing", "Payment"), old.get_model("billing", "CreditPack")
    pack = CreditPack.objects.get(slug="starter")
    people = {}
    for name in ("keeps", "spent", "refunded", "never"):
        person = User.objects.create(email=f"{name}@example.com", password="!")
        people[name] = Profile.objects.get_or_create(user=person)[0]
    for name in ("keeps", "spent", "refunded"):
        payment = Payment.objects.create(
            user_id=people[name].user_id, pack=pack, credits=5, amount=500, currency="usd", status="succeeded"
        )
        old_ledger_write(old, people[name], 5, "purchase", "bought", payment)
    old_ledger_write(old, people["keeps"], 3, "grant", "welcome")
    old_ledger_write(old, people["keeps"], -2, "spend", "used")
    old_ledger_write(old, people["spent"], -5, "spend", "used all")
    old_ledger_write(old, people["refunded"], -1, "spend", "used one")
    old_ledger_write(old, people["refunded"], -4, "refund", "refunded")
    assert list(broken_profiles()) == []  # the old invariant holds before the upgrade

    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    grants = {g.profile.user.email: g for g in CreditGrant.objects.select_related("profile__user")}
    assert set(grants) == {"keeps@example.com"}
    kept = grants["keeps@example.com"]
    assert (kept.category, kept.source, kept.amount, kept.remaining, kept.expires_at) == (
        "paid",
        "migration",
        6,
        6,
        None,
    )
    assert list(broken_profiles()) == [] and grant_problems() == []
    call_command("audit_credits")
    # The upgraded books go on working: spend from the carried-over grant, buy more.
    user = kept.profile.user
    ledger.spend_credits(user, 6, reason="after the upgrade")
    ledger.grant_credits(user, 2, reason="new")
    assert ledger.get_balance(user) == 2
    assert grant_problems() == []
