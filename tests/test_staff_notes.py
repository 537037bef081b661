"""The staff note beside the customer's reason: written by the ledger with the entry (one statement
on PostgreSQL, the ORM path on SQLite), typed in the admin's adjust and grant forms and the
commands, shown in the admin and never to the customer."""

from __future__ import annotations

import re
import uuid
from http import HTTPStatus
from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing import charges, ledger
from billing.models import LedgerEntry

pytestmark = pytest.mark.django_db

NOTE = "asked by Carol on the phone, ticket SUP-4711"


@pytest.fixture
def staff_user(make_user):
    return make_user("support@example.com", is_staff=True)


@pytest.fixture
def superuser_client(make_user):
    client = Client()
    client.force_login(make_user("root@example.com", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def adjuster(make_staff):
    return make_staff(
        "adjuster@example.com",
        "adjust_credits",
        "grant_credits",
        "view_profile",
        "change_profile",
        "view_ledgerentry",
    )


def _post(client, name, user, **data):
    data.setdefault("request_id", str(uuid.uuid4()))
    return client.post(reverse(f"admin:billing_profile_{name}", args=[user.profile.pk]), data)


# --- the ledger -----------------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [7, -3])
def test_adjust_stores_the_note_with_the_entry(user, staff_user, delta):
    ledger.grant_credits(user, 5, reason="start", category="paid")
    entry = ledger.adjust_credits(user, delta, reason="Correction", actor=staff_user, staff_note=f"  {NOTE}  ")
    stored = LedgerEntry.objects.get(pk=entry.pk)
    assert (entry.staff_note, stored.staff_note, stored.reason, stored.delta) == (NOTE, NOTE, "Correction", delta)


def test_grant_and_spend_without_a_note_store_an_empty_one(user):
    granted = ledger.grant_credits(user, 5, reason="Bonus credits", staff_note="spring promotion")
    spent = ledger.spend_credits(user, 1, reason="a fortune")
    assert LedgerEntry.objects.get(pk=granted.pk).staff_note == "spring promotion"
    assert LedgerEntry.objects.get(pk=spent.pk).staff_note == ""


def test_a_note_with_nul_is_refused_and_changes_nothing(user, staff_user):
    with pytest.raises(ValueError, match="NUL"):
        ledger.adjust_credits(user, 5, reason="Correction", actor=staff_user, staff_note="bad\x00note")
    assert not LedgerEntry.objects.exists()


def _statements(queries) -> list[str]:
    """What reached the database but the test transaction's own savepoints."""
    return [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]


@pytest.mark.postgres
def test_a_debit_with_a_note_is_still_one_statement(user, staff_user, settings):
    ledger.grant_credits(user, 5, reason="start", category="paid")
    with CaptureQueriesContext(connection) as queries:
        entry = ledger.adjust_credits(user, -2, reason="Correction", actor=staff_user, staff_note=NOTE)
    statements = _statements(queries)
    assert len(statements) == 1 and "billing_spend(" in statements[0], statements
    assert LedgerEntry.objects.get(pk=entry.pk).staff_note == NOTE
    with CaptureQueriesContext(connection) as queries:
        ledger.adjust_credits(user, 4, reason="Correction", actor=staff_user, staff_note=NOTE)
    statements = _statements(queries)
    assert len(statements) == 1 and "staff_note" in statements[0], statements


# --- the admin forms --------------------------------------------------------------------------------


def test_the_adjust_form_says_who_sees_what(client, adjuster, user):
    client.force_login(adjuster)
    page = client.get(reverse("admin:billing_profile_adjust", args=[user.profile.pk])).content.decode()
    assert "Shown to the customer on their billing page" in page
    assert "Staff only: who asked, ticket number." in page
    assert re.search(r'<label class="required" for="id_staff_note">', page)
    assert not re.search(r'<label class="required" for="id_reason">', page)


def test_an_adjustment_with_an_empty_description_reads_plainly_for_the_customer(client, adjuster, user):
    client.force_login(adjuster)
    response = _post(client, "adjust", user, delta="4", reason="  ", staff_note=NOTE)
    assert response.status_code == HTTPStatus.FOUND
    entry = LedgerEntry.objects.get()
    assert (entry.reason, entry.staff_note, entry.actor) == ("Adjustment by support", NOTE, adjuster)


def test_an_adjustment_needs_a_staff_note(client, adjuster, user):
    client.force_login(adjuster)
    response = _post(client, "adjust", user, delta="4", reason="Sorry for the outage", staff_note="")
    assert response.status_code == HTTPStatus.OK
    assert b"A staff note is required: who asked, and why." in response.content
    assert not LedgerEntry.objects.exists()


def test_a_grant_defaults_its_description_and_keeps_an_optional_note(client, adjuster, user, make_user):
    client.force_login(adjuster)
    assert _post(client, "grant", user, amount="3", category="promotional", reason="").status_code == HTTPStatus.FOUND
    other = make_user("carol@example.com")
    response = _post(client, "grant", other, amount="2", category="paid", reason="Welcome back", staff_note=NOTE)
    assert response.status_code == HTTPStatus.FOUND
    rows = list(LedgerEntry.objects.order_by("id").values_list("reason", "staff_note"))
    assert rows == [("Bonus credits", ""), ("Welcome back", NOTE)]


def test_the_admin_shows_the_note_in_the_list_the_entry_and_the_profile(superuser_client, user, staff_user):
    entry = ledger.adjust_credits(user, 3, reason="Correction", actor=staff_user, staff_note=NOTE)
    listing = superuser_client.get(reverse("admin:billing_ledgerentry_changelist")).content.decode()
    assert NOTE in listing and "column-staff_note" in listing
    assert NOTE in superuser_client.get(reverse("admin:billing_ledgerentry_change", args=[entry.pk])).content.decode()
    profile_page = superuser_client.get(reverse("admin:billing_profile_change", args=[user.profile.pk]))
    assert NOTE in profile_page.content.decode()
    found = superuser_client.get(reverse("admin:billing_ledgerentry_changelist"), {"q": "SUP-4711"}).content.decode()
    assert f'href="/admin/billing/ledgerentry/{entry.pk}/change/' in found


# --- never for the customer ---------------------------------------------------------------------------


def test_the_customer_never_sees_the_note(client, user, staff_user, settings):
    ledger.adjust_credits(user, 3, reason="Adjustment by support", actor=staff_user, staff_note=NOTE)
    ledger.grant_credits(user, 2, reason="Bonus credits", staff_note=NOTE)
    client.force_login(user)
    pages = [client.get("/billing/"), client.get("/api/current_user")]
    for page in pages:
        assert page.status_code == HTTPStatus.OK
        assert "SUP-4711" not in page.content.decode()
    assert "Adjustment by support" in pages[0].content.decode()
    assert not any("SUP-4711" in message.body for message in mail.outbox)


def test_a_refund_tells_the_customer_what_in_their_words_and_staff_the_ids(localstripe, user, staff_user):
    from billing import refunds

    payment = charges.start_charge(user, pack_slug="starter", payment_method="pm_card_visa").payment
    refunds.refund_payment(payment, actor=staff_user, amount=200, staff_note="  asked by mail, ticket SUP-9  ")

    entry = LedgerEntry.objects.get(payment=payment, kind=LedgerEntry.Kind.REFUND)
    assert re.fullmatch(r"Refund of Starter bought \d{1,2} [A-Z][a-z]{2} \d{4}", entry.reason), entry.reason
    assert str(payment.pk) not in entry.reason and "pi_" not in entry.reason
    assert re.fullmatch(
        rf"Payment {payment.pk}, intent {payment.stripe_payment_intent_id}; "
        r"refund re_\w+ by support@example.com: asked by mail, ticket SUP-9",
        entry.staff_note,
    ), entry.staff_note
    client = Client()
    client.force_login(user)
    page = client.get("/billing/").content.decode()
    assert entry.reason in page and payment.stripe_payment_intent_id not in page and "SUP-9" not in page


def test_the_refund_confirmation_takes_a_staff_note(localstripe, user, make_staff):
    payment = charges.start_charge(user, pack_slug="starter", payment_method="pm_card_visa").payment
    client = Client()
    client.force_login(make_staff("refunder@example.com", "view_payment", "refund_payment"))
    url = "/admin/billing/payment/"
    action = {"action": "refund_through_stripe", "_selected_action": [str(payment.pk)]}
    page = client.post(url, action)
    assert "Staff only: who asked, ticket number." in page.content.decode()
    form = page.context["form"]
    data = {**action, "post": "yes", "amount": "5.00", "refunded_before": form.initial["refunded_before"]}
    client.post(url, {**data, "staff_note": "chargeback threat, ticket SUP-10"}, follow=True)

    entry = LedgerEntry.objects.get(payment=payment, kind=LedgerEntry.Kind.REFUND)
    assert entry.staff_note.endswith("by refunder@example.com: chargeback threat, ticket SUP-10")
    assert "SUP-10" not in entry.reason


# --- the commands ---------------------------------------------------------------------------------------


def test_the_commands_take_a_note(user):
    out = StringIO()
    call_command("grant_credits", user.email, "5", "--reason", "Bonus credits", "--note", NOTE, stdout=out)
    call_command("adjust_credits", user.email, "-2", "--reason", "Correction", "--note", "ticket 9", stdout=out)
    assert list(LedgerEntry.objects.order_by("id").values_list("delta", "staff_note")) == [(5, NOTE), (-2, "ticket 9")]
    with pytest.raises(CommandError, match="--note must be at most 500 characters"):
        call_command("adjust_credits", user.email, "1", "--reason", "x", "--note", "n" * 501, stdout=out)
