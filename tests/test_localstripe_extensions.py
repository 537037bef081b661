"""The project's localstripe launcher teaches the stand-in what real Stripe documents and
localstripe 1.15 lacks (scripts/localstripe_server.py). These tests pin that the stand-in now
behaves as Stripe's documentation says, so tests relying on it test the real behaviour."""

import requests

from scripts import localstripe_server

KEY = {"Authorization": "Bearer sk_test_suite"}
INTENT = {
    "amount": "500",
    "currency": "usd",
    "payment_method": "pm_card_visa",
    "payment_method_types[]": "card",
    "confirm": "true",
}


def create(base: str, data: dict, key: str) -> requests.Response:
    return requests.post(f"{base}/v1/payment_intents", data=data, headers={**KEY, "Idempotency-Key": key}, timeout=10)


def intents(base: str) -> list[dict]:
    return requests.get(f"{base}/v1/payment_intents", params={"limit": 100}, headers=KEY, timeout=10).json()["data"]


def test_a_repeated_idempotency_key_answers_the_first_result_and_charges_once(localstripe):
    localstripe_server.reset(localstripe)
    first, again = create(localstripe, INTENT, "key-1"), create(localstripe, INTENT, "key-1")
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(intents(localstripe)) == 1


def test_the_same_key_with_other_parameters_is_an_idempotency_error(localstripe):
    localstripe_server.reset(localstripe)
    create(localstripe, INTENT, "key-2")
    other = create(localstripe, {**INTENT, "amount": "600"}, "key-2")
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "idempotency_error"
    assert len(intents(localstripe)) == 1


def test_keys_are_forgotten_with_the_data_and_distinct_keys_are_distinct(localstripe):
    localstripe_server.reset(localstripe)
    create(localstripe, INTENT, "key-3")
    create(localstripe, INTENT, "key-4")
    assert len(intents(localstripe)) == 2
    localstripe_server.reset(localstripe)
    create(localstripe, INTENT, "key-3")
    assert len(intents(localstripe)) == 1
