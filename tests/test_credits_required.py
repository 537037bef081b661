"""@credits_required(n) through the example paid action (/fortune/) and a throwaway view."""

from http import HTTPStatus

import pytest
from django.http import HttpResponse, JsonResponse
from django.test import RequestFactory

from billing import ledger
from billing.decorators import credits_required
from billing.models import LedgerEntry


def test_paid_action_spends_one_credit(signed_in_client, user):
    ledger.add_credits(user, 2, kind="grant", reason="seed")
    response = signed_in_client.post("/fortune/", follow=True)
    assert response.status_code == HTTPStatus.OK
    assert b"Your fortune:" in response.content
    assert ledger.get_balance(user) == 1
    assert LedgerEntry.objects.filter(kind="spend", reason="Fortune told").count() == 1


def test_paid_action_page_get_costs_nothing(signed_in_client, user):
    ledger.add_credits(user, 1, kind="grant", reason="seed")
    assert signed_in_client.get("/fortune/").status_code == HTTPStatus.OK
    assert ledger.get_balance(user) == 1


def test_short_balance_shows_402_page_with_add_credits_link(signed_in_client, user):
    response = signed_in_client.post("/fortune/")
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert b"Not enough credits" in response.content
    assert b'href="/billing/#add-credits"' in response.content
    assert LedgerEntry.objects.count() == 0


def test_short_balance_answers_json_to_api_clients(signed_in_client, user):
    response = signed_in_client.post("/fortune/", HTTP_ACCEPT="application/json")
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert response.json() == {"error": "You need 1 credit but have 0.", "credits": 0, "required": 1}


def test_anonymous_is_sent_to_login(client, db):
    response = client.post("/fortune/")
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"].startswith("/accounts/login/")


def test_failed_view_rolls_back_the_spend(user):
    ledger.add_credits(user, 3, kind="grant", reason="seed")

    @credits_required(2)
    def broken(request):
        return JsonResponse({"error": "upstream failed"}, status=HTTPStatus.BAD_GATEWAY)

    @credits_required(2)
    def raising(request):
        raise RuntimeError("boom")

    request = RequestFactory().post("/x")
    request.user = user
    assert broken(request).status_code == HTTPStatus.BAD_GATEWAY
    with pytest.raises(RuntimeError):
        raising(request)
    assert ledger.get_balance(user) == 3
    assert not LedgerEntry.objects.filter(kind="spend").exists()


def test_idempotency_key_header_spends_once(user):
    ledger.add_credits(user, 5, kind="grant", reason="seed")

    @credits_required(2, reason="export")
    def export(request):
        return HttpResponse("ok")

    for _ in range(3):
        request = RequestFactory().post("/x", HTTP_IDEMPOTENCY_KEY="abc-123")
        request.user = user
        assert export(request).status_code == HTTPStatus.OK
    assert ledger.get_balance(user) == 3


@pytest.mark.parametrize("cost", [0, -1, 1.5, True])
def test_decorator_rejects_bad_costs(cost):
    with pytest.raises(ValueError):
        credits_required(cost)
