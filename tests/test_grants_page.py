"""/billing/ with credit grants, through the HTTP client: the balance by category, what expires
when in plain words, pack validity, and expiry entries in the ledger table."""

from datetime import timedelta
from http import HTTPStatus

import pytest
from django.utils import timezone

from billing import ledger
from billing.models import CreditGrant, CreditPack, Profile

pytestmark = pytest.mark.django_db


def page(client) -> str:
    response = client.get("/billing/")
    assert response.status_code == HTTPStatus.OK
    return response.content.decode()


def test_only_paid_credits_that_never_expire_say_nothing_about_expiry(signed_in_client, user):
    ledger.adjust_credits(user, 5, reason="opening", actor=None)
    html = page(signed_in_client)
    assert 'id="balance-value">5<' in html
    assert "expire" not in html
    assert 'data-testid="balance-split"' not in html


def test_balance_by_category_and_what_expires_when(signed_in_client, user):
    soon = timezone.now() + timedelta(days=30)
    later = timezone.now() + timedelta(days=400)
    ledger.adjust_credits(user, 10, reason="paid, forever", actor=None)
    ledger.grant_credits(user, 2, reason="welcome", expires_at=soon)
    ledger.grant_credits(user, 1, reason="welcome too", expires_at=soon)
    ledger.grant_credits(user, 4, reason="paid, a year", category="paid", expires_at=later)
    html = page(signed_in_client)
    assert 'id="balance-value">17<' in html
    assert "14 paid, 3 promotional" in html
    soon_day, later_day = (timezone.localtime(day).strftime("%-d %b %Y") for day in (soon, later))
    assert f"3 promotional credits expire on {soon_day}" in html
    assert f"4 paid credits expire on {later_day}" in html
    assert html.index(soon_day) < html.index(later_day)  # soonest first


def test_one_credit_reads_in_the_singular(signed_in_client, user):
    ledger.grant_credits(user, 1, reason="welcome", expires_at=timezone.now() + timedelta(days=3))
    assert "1 promotional credit expires on" in page(signed_in_client)


def test_expired_credits_are_neither_in_the_balance_nor_listed(signed_in_client, user):
    ledger.grant_credits(user, 3, reason="welcome", expires_at=timezone.now() + timedelta(days=1))
    ledger.adjust_credits(user, 2, reason="paid", actor=None)
    two_days_on = timezone.now() + timedelta(days=2)
    assert ledger.expire_credits(now=two_days_on) == 3
    html = page(signed_in_client)
    assert 'id="balance-value">2<' in html
    assert "expire on" not in html
    assert 'class="kind kind-expiry">Expired<' in html
    assert "3 promotional credits expired" in html  # the entry's reason


def test_credits_past_their_expiry_are_left_out_before_any_sweep(signed_in_client, user):
    ledger.grant_credits(user, 3, reason="welcome", expires_at=timezone.now() + timedelta(days=1))
    ledger.grant_credits(user, 2, reason="later", expires_at=timezone.now() + timedelta(days=9))
    past = timezone.now() - timedelta(seconds=1)  # the clock cannot be moved, so the expiry is
    CreditGrant.objects.filter(entry__reason="welcome").update(expires_at=past)
    Profile.objects.filter(user=user).update(next_expiry=past)
    html = page(signed_in_client)
    assert 'id="balance-value">2<' in html
    assert "0 paid, 2 promotional" in html
    assert "2 promotional credits expire on" in html
    assert "3 promotional" not in html


def test_pack_cards_show_their_validity(signed_in_client):
    CreditPack.objects.create(slug="year", name="Yearly", credits=50, amount=4000, validity_days=365)
    CreditPack.objects.create(slug="day", name="Daily", credits=2, amount=100, validity_days=1)
    html = page(signed_in_client)
    assert "valid for 365 days" in html
    assert "valid for 1 day<" in html
    assert html.count('class="pack-validity"') == 2  # the starter pack never expires: nothing said
