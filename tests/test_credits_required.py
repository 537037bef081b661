"""@credits_required(n) through the example paid action (/fortune/) and a throwaway view."""

import json
from http import HTTPStatus

import pytest
from django.http import HttpResponse, JsonResponse
from django.test import RequestFactory

from billing import ledger
from billing.decorators import credits_required
from billing.models import LedgerEntry
from tests.conftest import run_in_processes


def test_paid_action_spends_one_credit(signed_in_client, user):
    ledger.add_credits(user, 2, kind=LedgerEntry.Kind.BONUS, reason="seed")
    response = signed_in_client.post("/fortune/", follow=True)
    assert response.status_code == HTTPStatus.OK
    assert b'data-testid="fortune"' in response.content and b"1 credit spent, 1 left." in response.content
    assert ledger.get_balance(user) == 1
    assert LedgerEntry.objects.filter(kind="capture", reason="Fortune told").count() == 1


def test_paid_action_page_get_costs_nothing(signed_in_client, user):
    ledger.add_credits(user, 1, kind=LedgerEntry.Kind.BONUS, reason="seed")
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
    ledger.add_credits(user, 3, kind=LedgerEntry.Kind.BONUS, reason="seed")

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
    assert not LedgerEntry.objects.filter(kind="capture").exists()


def test_idempotency_key_header_spends_once(user):
    ledger.add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="seed")

    @credits_required(2, reason="export")
    def export(request):
        return HttpResponse("ok")

    for _ in range(3):
        request = RequestFactory().post("/x", HTTP_IDEMPOTENCY_KEY="abc-123")
        request.user = user
        assert export(request).status_code == HTTPStatus.OK
    assert ledger.get_balance(user) == 3


# --- Idempotency-Key: a repeated request never repeats the paid action -----------------------


def counting_view(cost: int, *, reason: str = "export"):
    """A paid view that counts how often it really ran and answers something unique each time."""
    calls = []

    @credits_required(cost, reason=reason)
    def view(request):
        calls.append(1)
        return JsonResponse({"run": len(calls)}, status=HTTPStatus.CREATED)

    return view, calls


def call(view, user, key=None, path="/x", **headers):
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    request = RequestFactory().post(path, **headers)
    request.user = user
    return view(request)


def test_a_replayed_key_answers_the_first_response_without_running_the_view_again(user):
    ledger.add_credits(user, 1, kind=LedgerEntry.Kind.BONUS, reason="seed")
    view, calls = counting_view(1)
    answers = [call(view, user, "once-only") for _ in range(6)]
    assert len(calls) == 1
    assert ledger.get_balance(user) == 0
    assert {(a.status_code, a.content) for a in answers} == {(HTTPStatus.CREATED, b'{"run": 1}')}
    assert [a.get("Idempotent-Replayed") for a in answers] == [None] + ["true"] * 5
    assert LedgerEntry.objects.filter(kind="capture").count() == 1


def test_a_replayed_paid_page_post_does_not_tell_a_second_fortune(signed_in_client, user):
    ledger.add_credits(user, 1, kind=LedgerEntry.Kind.BONUS, reason="seed")
    for _ in range(6):
        response = signed_in_client.post("/fortune/", HTTP_IDEMPOTENCY_KEY="fortune-1")
        assert response.status_code == HTTPStatus.FOUND
    assert LedgerEntry.objects.filter(kind="capture").count() == 1
    assert ledger.get_balance(user) == 0


def test_a_failed_first_attempt_keeps_nothing_so_the_retry_runs(user):
    ledger.add_credits(user, 2, kind=LedgerEntry.Kind.BONUS, reason="seed")
    outcomes = iter([HTTPStatus.BAD_GATEWAY, HTTPStatus.OK])

    @credits_required(1, reason="flaky")
    def flaky(request):
        return HttpResponse("x", status=next(outcomes))

    assert call(flaky, user, "k").status_code == HTTPStatus.BAD_GATEWAY
    assert ledger.get_balance(user) == 2
    assert call(flaky, user, "k").status_code == HTTPStatus.OK
    assert ledger.get_balance(user) == 1
    assert call(flaky, user, "k")["Idempotent-Replayed"] == "true"
    assert ledger.get_balance(user) == 1


def test_keys_are_never_cut_so_a_shared_prefix_is_two_requests(user):
    ledger.add_credits(user, 2, kind=LedgerEntry.Kind.BONUS, reason="seed")
    view, calls = counting_view(1)
    prefix = "p" * 150
    assert call(view, user, prefix + "-one").status_code == HTTPStatus.CREATED
    assert call(view, user, prefix + "-two").status_code == HTTPStatus.CREATED
    assert len(calls) == 2
    assert ledger.get_balance(user) == 0


@pytest.mark.parametrize("key", ["k" * 201, "   ", "tab\tkey", "caf\u00e9"])
def test_a_malformed_key_is_refused_with_400_json_and_spends_nothing(user, key):
    ledger.add_credits(user, 1, kind=LedgerEntry.Kind.BONUS, reason="seed")
    view, calls = counting_view(1)
    response = call(view, user, key.encode().decode("unicode_escape"))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "Idempotency-Key" in json.loads(response.content)["error"]
    assert calls == []
    assert ledger.get_balance(user) == 1


def test_the_same_key_on_another_paid_view_is_refused_with_422_not_500(user):
    ledger.add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="seed")
    cheap, cheap_calls = counting_view(1, reason="cheap")
    dear, dear_calls = counting_view(2, reason="dear")
    assert call(cheap, user, "shared").status_code == HTTPStatus.CREATED
    response = call(dear, user, "shared")
    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "different request" in json.loads(response.content)["error"]
    assert call(cheap, user, "shared", path="/elsewhere").status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert (len(cheap_calls), len(dear_calls), ledger.get_balance(user)) == (1, 0, 4)


def test_a_key_the_ledger_holds_for_another_operation_is_422_not_500(user):
    """A spend key written by a direct ledger call (or before responses were kept) still protects."""
    ledger.add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="seed")
    ledger.spend_credits(user, 3, reason="elsewhere", idempotency_key=f"spend:{user.pk}:legacy")
    view, calls = counting_view(1)
    assert call(view, user, "legacy").status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert calls == []
    assert ledger.get_balance(user) == 2


def test_keys_belong_to_their_user(user, other_user):
    for who in (user, other_user):
        ledger.add_credits(who, 1, kind=LedgerEntry.Kind.BONUS, reason="seed")
    view, calls = counting_view(1)
    assert call(view, user, "same").status_code == HTTPStatus.CREATED
    assert call(view, other_user, "same").status_code == HTTPStatus.CREATED
    assert len(calls) == 2


def _replay_in_child(user_id: int, key: str) -> tuple[int, str | None]:
    from accounts.models import User

    view, _ = counting_view(1, reason="concurrent export")
    response = call(view, User.objects.get(pk=user_id), key)
    return response.status_code, response.content.decode()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("credits", [10, 1])
def test_concurrent_replays_in_many_processes_run_the_action_once(user, credits):
    # With one credit, the copies that lose the race must wait for the first answer, not find
    # the balance reserved and answer 402 (the reliability suite's replayed-key attack found it).
    ledger.add_credits(user, credits, kind=LedgerEntry.Kind.BONUS, reason="seed")
    results = run_in_processes(_replay_in_child, [(user.pk, "storm")] * 8)
    assert {status for status, _ in results} == {HTTPStatus.CREATED}
    assert len({body for _, body in results}) == 1  # every process got the first response
    assert ledger.get_balance(user) == credits - 1
    assert LedgerEntry.objects.filter(kind="capture").count() == 1


@pytest.mark.parametrize("cost", [0, -1, 1.5, True])
def test_decorator_rejects_bad_costs(cost):
    with pytest.raises(ValueError):
        credits_required(cost)
