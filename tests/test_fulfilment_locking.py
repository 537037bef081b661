"""billing.fulfilment locks the payment row and nothing else (PostgreSQL).

`SELECT ... FOR UPDATE` over a join locks every joined row; with the pack and the user joined in,
every purchase of the same pack, by anyone, would queue behind the one being fulfilled, and
staff could not edit the pack meanwhile.

Contract tests of the implementation: they pin which rows are locked, so they are meant to move
when the implementation changes (a new lock must still leave the pack and the user free).
"""

import pytest
from django.db import connection, transaction

from billing import fulfilment
from tests import stripe_events as events

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _lockable(table: str, pk: int) -> bool:
    """Can another connection lock the row right now (without waiting)?"""
    other = connection.get_new_connection(connection.get_connection_params())
    try:
        other.autocommit = True
        with other.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
            try:
                cursor.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE NOWAIT", [pk])  # noqa: S608
            except Exception as exc:
                if "could not obtain lock" in str(exc):
                    return False
                raise
            return True
    finally:
        other.close()


def test_fulfilling_a_payment_locks_neither_its_pack_nor_its_user(user):
    payment = events.make_payment(user)
    with transaction.atomic():
        fulfilment.fulfil_payment(
            payment, intent_id=payment.stripe_payment_intent_id, amount=500, currency="usd", source="test"
        )
        assert not _lockable("billing_payment", payment.pk)  # the payment itself is held
        assert _lockable("billing_creditpack", payment.pack_id)
        assert _lockable("accounts_user", payment.user_id)


def test_a_refund_locks_neither_the_pack_nor_the_user(user):
    payment = events.make_payment(user)
    intent_id = payment.stripe_payment_intent_id
    fulfilment.fulfil_payment(payment, intent_id=intent_id, amount=500, currency="usd", source="test")
    with transaction.atomic():
        fulfilment.record_refund(payment, amount_refunded=500)
        assert _lockable("billing_creditpack", payment.pack_id)
        assert _lockable("accounts_user", payment.user_id)
