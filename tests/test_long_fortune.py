"""The metered example action (/fortune/long/, `@metered_view`): charged by the fortune's length,
a short balance answered 402 like `@credits_required`, a failure charging nothing; and
`metered_view` on a throwaway view (JSON 402, sign-in, Idempotency-Key, expiry)."""

import json
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.http import JsonResponse
from django.test import RequestFactory
from django.utils import timezone

from billing import ledger
from billing.metering import metered_view
from billing.models import Hold, LedgerEntry
from core import views as core_views

pytestmark = pytest.mark.django_db

LONG = "/fortune/long/"


def fund(user, credits):
    ledger.add_credits(user, credits, kind=LedgerEntry.Kind.BONUS, reason="seed")


def captures(user):
    return list(
        LedgerEntry.objects.filter(profile__user=user, kind=LedgerEntry.Kind.CAPTURE)
        .order_by("id")
        .values_list("delta", "reason")
    )


def test_the_page_says_what_it_may_cost_and_costs_nothing(signed_in_client, user):
    fund(user, 3)
    response = signed_in_client.get(LONG)
    assert response.status_code == HTTPStatus.OK
    assert b"1 credit per sentence" in response.content
    assert b"up to 3 credits" in response.content
    assert ledger.get_balance(user) == 3 and not Hold.objects.exists()


def test_each_fortune_is_charged_by_its_length(signed_in_client, user):
    fund(user, 10)
    lengths = []
    for left in (9, 7, 4):
        response = signed_in_client.post(LONG, follow=True)
        assert response.status_code == HTTPStatus.OK
        assert b"Your long fortune" in response.content
        assert f"spent, {left} left.".encode() in response.content  # the balance once captured
        lengths.append(-captures(user)[-1][0])
    assert lengths == [1, 2, 3]  # one sentence more each time, 1 credit a sentence
    assert captures(user) == [(-1, "Long fortune told"), (-2, "Long fortune told"), (-3, "Long fortune told")]
    assert ledger.get_balance(user) == 4
    # Each held the most it could cost and captured what it used: nothing stays reserved.
    assert list(Hold.objects.values_list("amount", "captured", "status")) == [(3, n, "captured") for n in (3, 2, 1)]


def test_a_balance_below_the_limit_answers_402_and_runs_nothing(signed_in_client, user, monkeypatch):
    fund(user, 2)  # the first fortune would cost 1, but 3 must be held while it is written
    monkeypatch.setattr(core_views, "compose_long_fortune", lambda told: pytest.fail("the view ran"))
    response = signed_in_client.post(LONG)
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert b"Not enough credits" in response.content
    assert b"costs up to <strong>3 credits</strong>" in response.content
    assert b'href="/billing/#add-credits"' in response.content
    assert ledger.get_balance(user) == 2
    assert not Hold.objects.exists() and captures(user) == []


def test_a_short_balance_answers_json_to_api_clients(signed_in_client, user):
    response = signed_in_client.post(LONG, HTTP_ACCEPT="application/json")
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert response.json() == {"error": "You need 3 credits but have 0.", "credits": 0, "required": 3}


def test_a_failed_fortune_charges_nothing(signed_in_client, user, monkeypatch):
    fund(user, 3)

    def oracle_down(told_before):
        raise core_views.OracleUnavailable

    monkeypatch.setattr(core_views, "compose_long_fortune", oracle_down)
    response = signed_in_client.post(LONG)
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert b"Nothing was charged" in response.content
    assert ledger.get_balance(user) == 3
    assert list(Hold.objects.values_list("status", flat=True)) == ["released"]
    assert captures(user) == []


def test_an_exception_in_the_view_charges_nothing(signed_in_client, user, monkeypatch):
    fund(user, 3)

    def broken(told_before):
        raise RuntimeError("bug")

    monkeypatch.setattr(core_views, "compose_long_fortune", broken)
    with pytest.raises(RuntimeError, match="bug"):
        signed_in_client.post(LONG)
    assert ledger.get_balance(user) == 3
    assert list(Hold.objects.values_list("status", flat=True)) == ["released"]


def test_signed_out_is_sent_to_sign_in(client):
    for method in (client.get, client.post):
        response = method(LONG)
        assert response.status_code == HTTPStatus.FOUND
        assert response["Location"].startswith("/accounts/login/")


def test_the_short_fortune_offers_the_long_one(signed_in_client):
    assert b'href="/fortune/long/"' in signed_in_client.get("/fortune/").content
    assert b'href="/fortune/long/"' in signed_in_client.get("/").content


# --- metered_view on a throwaway view ---------------------------------------------------------


@metered_view(4, reason="export", expires_in=timedelta(minutes=2))
def export(request):
    request.meter.charge(int(request.POST.get("rows", "0")) // 100)
    return JsonResponse({"ok": True})


def post(user, rows="250", **headers):
    request = RequestFactory().post("/export", {"rows": rows}, headers=headers)
    request.user = user
    return export(request)


def test_metered_view_holds_for_its_expiry_and_captures_what_was_charged(user):
    fund(user, 5)
    before = timezone.now()
    assert post(user).status_code == HTTPStatus.OK
    hold = Hold.objects.get()
    assert (hold.amount, hold.captured, hold.reason) == (4, 2, "export")
    assert timedelta(minutes=1) < hold.expires_at - before <= timedelta(minutes=2, seconds=5)
    assert ledger.get_balance(user) == 3
    assert export.credits_up_to == 4


def test_metered_view_answers_a_short_balance_402_in_json(user):
    fund(user, 3)
    response = post(user, Accept="application/json")
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert json.loads(response.content) == {"error": "You need 4 credits but have 3.", "credits": 3, "required": 4}
    assert ledger.get_balance(user) == 3 and not Hold.objects.exists()


def test_metered_view_charges_an_idempotency_key_once(user):
    fund(user, 8)
    first = post(user, **{"Idempotency-Key": "export-1"})
    again = post(user, **{"Idempotency-Key": "export-1"})
    assert first.status_code == again.status_code == HTTPStatus.OK
    assert again["Idempotent-Replayed"] == "true"
    assert ledger.get_balance(user) == 6


def test_metered_view_captures_no_more_than_it_held(user, caplog):
    fund(user, 5)
    assert post(user, rows="900").status_code == HTTPStatus.OK  # 9 charged, 4 held
    assert ledger.get_balance(user) == 1
    assert "export charged 9 credits, more than the 4 it held" in caplog.text


@pytest.mark.parametrize("up_to", [0, -1, 1.5, True, "3"])
def test_metered_view_needs_a_positive_whole_limit(up_to):
    with pytest.raises(ValueError, match="positive whole number"):
        metered_view(up_to)
