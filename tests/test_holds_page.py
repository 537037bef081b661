"""Credits on hold on /billing/: each active hold with its amount, reason and expiry beside the
balance (already the available balance); nothing once they end or expire."""

from datetime import timedelta
from http import HTTPStatus

import pytest
from django.utils import timezone

from billing import ledger
from billing.models import Hold, LedgerEntry, Profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def funded(user):
    ledger.add_credits(user, 10, kind=LedgerEntry.Kind.BONUS, reason="seed")
    return user


def on_hold(response) -> str:
    text = response.content.decode()
    if 'data-testid="on-hold"' not in text:
        return ""
    return text.split('data-testid="on-hold"', 1)[1].split("</ul>", 1)[0]


def test_no_holds_shows_nothing(signed_in_client, funded):
    response = signed_in_client.get("/billing/")
    assert response.status_code == HTTPStatus.OK
    assert on_hold(response) == "" and b"on hold" not in response.content
    assert b'data-testid="on-hold-total"' not in response.content


def test_active_holds_are_listed_beside_the_available_balance(signed_in_client, funded):
    hold = ledger.hold_credits(funded, 2, reason="AI answer", expires_in=timedelta(minutes=10))
    ledger.hold_credits(funded, 1, reason="Export", expires_in=timedelta(minutes=5))
    response = signed_in_client.get("/billing/")
    until = timezone.localtime(hold.expires_at).strftime("%H:%M")
    listed = on_hold(response)
    assert f"2 credits on hold for AI answer until {until}" in listed
    assert "1 credit on hold for Export until" in listed
    assert listed.index("Export") < listed.index("AI answer")  # soonest expiry first
    assert b'id="balance-value">7<' in response.content  # 10 less the 3 on hold
    assert b"3 of your 10 credits are on hold:" in response.content


def test_a_hold_expiring_another_day_names_the_day(signed_in_client, funded):
    hold = ledger.hold_credits(funded, 3, reason="Nightly report", expires_in=timedelta(days=3))
    day = timezone.localtime(hold.expires_at).strftime("%-d %b %Y")
    assert f"3 credits on hold for Nightly report until {day}" in on_hold(signed_in_client.get("/billing/"))


def test_ended_and_expired_holds_are_not_shown(signed_in_client, funded):
    ledger.capture_hold(ledger.hold_credits(funded, 2, reason="captured one"), 1)
    ledger.release_hold(ledger.hold_credits(funded, 2, reason="released one"))
    lapsed = ledger.hold_credits(funded, 2, reason="lapsed one")
    past = timezone.now() - timedelta(seconds=1)
    Hold.objects.filter(pk=lapsed.pk).update(expires_at=past)  # as if its time had passed
    Profile.objects.filter(user=funded).update(next_hold_expiry=past)
    response = signed_in_client.get("/billing/")
    assert on_hold(response) == ""
    assert b'id="balance-value">9<' in response.content


def test_the_reason_is_escaped(signed_in_client, funded):
    ledger.hold_credits(funded, 1, reason="<script>alert(1)</script>")
    listed = on_hold(signed_in_client.get("/billing/"))
    assert "<script>" not in listed and "&lt;script&gt;" in listed
