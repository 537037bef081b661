"""The ledger is append-only: the ORM refuses edits, and on PostgreSQL so does the database."""

import pytest
from django.db import DatabaseError, connection, transaction

from billing import ledger
from billing.exceptions import AppendOnlyViolation
from billing.models import LedgerEntry


@pytest.fixture
def entry(user):
    return ledger.add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="seed")


def test_orm_refuses_to_save_an_existing_entry(entry):
    stored = LedgerEntry.objects.get(pk=entry.pk)
    stored.delta = 500
    with pytest.raises(AppendOnlyViolation):
        stored.save()
    assert LedgerEntry.objects.get(pk=entry.pk).delta == 5


def test_orm_refuses_to_delete_an_entry(entry):
    with pytest.raises(AppendOnlyViolation):
        LedgerEntry.objects.get(pk=entry.pk).delete()
    with pytest.raises(AppendOnlyViolation):
        LedgerEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(AppendOnlyViolation):
        LedgerEntry.objects.all().delete()
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()


def test_orm_refuses_queryset_update(entry):
    with pytest.raises(AppendOnlyViolation):
        LedgerEntry.objects.filter(pk=entry.pk).update(delta=1)
    assert LedgerEntry.objects.get(pk=entry.pk).delta == 5


def test_deleting_a_user_with_history_is_refused(user, entry):
    from django.db.models import ProtectedError

    with pytest.raises(ProtectedError):
        user.delete()
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE billing_ledgerentry SET delta = 500 WHERE id = %s",
        "UPDATE billing_ledgerentry SET reason = 'edited' WHERE id = %s",
        "DELETE FROM billing_ledgerentry WHERE id = %s",
    ],
)
def test_postgresql_refuses_raw_update_and_delete(entry, sql):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [entry.pk])
    stored = LedgerEntry.objects.get(pk=entry.pk)
    assert (stored.delta, stored.reason) == (5, "seed")


@pytest.mark.postgres
def test_the_append_only_trigger_exists_after_all_migrations(db):
    """A later migration must not drop the guard silently."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT t.tgname, pg_get_triggerdef(t.oid)
            FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            WHERE c.relname = 'billing_ledgerentry' AND NOT t.tgisinternal AND t.tgenabled <> 'D'
            """
        )
        triggers = dict(cursor.fetchall())
    definition = triggers.get("billing_ledgerentry_append_only", "")
    assert "BEFORE DELETE OR UPDATE" in definition
    assert "FOR EACH ROW" in definition
