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


def search(base: str, query: str, **params) -> requests.Response:
    return requests.get(f"{base}/v1/payment_intents/search", params={"query": query, **params}, headers=KEY, timeout=10)


def test_intents_are_found_by_metadata_through_the_search_api(localstripe):
    localstripe_server.reset(localstripe)
    ours = create(localstripe, {**INTENT, "metadata[payment_id]": "7", "metadata[note]": "it's"}, "s-1").json()
    create(localstripe, {**INTENT, "metadata[payment_id]": "77"}, "s-2")
    create(localstripe, INTENT, "s-3")
    found = search(localstripe, "metadata['payment_id']:'7'")
    assert found.status_code == 200
    assert found.json()["object"] == "search_result"
    assert [intent["id"] for intent in found.json()["data"]] == [ours["id"]]
    quoted = search(localstripe, "metadata['note']:'it\\'s'").json()["data"]
    assert [intent["id"] for intent in quoted] == [ours["id"]]
    assert search(localstripe, "metadata['payment_id']:'8'").json()["data"] == []


def test_a_search_query_the_stand_in_cannot_read_is_refused(localstripe):
    answer = search(localstripe, "amount>100")
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_a_declined_card_error_names_the_intent_it_made(localstripe):
    localstripe_server.reset(localstripe)
    card = {"type": "card", "card[number]": "4000000000000341", "card[exp_month]": "12", "card[exp_year]": "2034"}
    method = requests.post(
        f"{localstripe}/v1/payment_methods", data={**card, "card[cvc]": "123"}, headers=KEY, timeout=10
    )
    declined = create(localstripe, {**INTENT, "payment_method": method.json()["id"]}, "d-1")
    assert declined.status_code == 402
    error = declined.json()["error"]
    assert error["type"] == "card_error"
    assert error["payment_intent"]["status"] == "requires_payment_method"
    assert [intent["id"] for intent in intents(localstripe)] == [error["payment_intent"]["id"]]


# --- card brands and payment_method_details ----------------------------------------------------


def test_a_charge_says_which_card_paid_it_with_the_brand_from_the_number(localstripe):
    localstripe_server.reset(localstripe)
    for payment_method, brand, last4 in [
        ("pm_card_visa", "visa", "4242"),
        ("pm_card_mastercard", "mastercard", "4444"),
        ("pm_card_amex", "amex", "0005"),
    ]:
        intent = create(localstripe, {**INTENT, "payment_method": payment_method, "expand[]": "latest_charge"}, brand)
        details = intent.json()["latest_charge"]["payment_method_details"]
        assert details["type"] == "card"
        assert (details["card"]["brand"], details["card"]["last4"]) == (brand, last4)
    made = requests.post(
        f"{localstripe}/v1/payment_methods",
        data={
            "type": "card",
            "card[number]": "5200828282828210",
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": "123",
        },
        headers=KEY,
        timeout=10,
    ).json()
    assert (made["card"]["brand"], made["card"]["last4"]) == ("mastercard", "8210")


def test_a_declined_card_is_named_by_the_error_and_the_intents_last_error(localstripe):
    localstripe_server.reset(localstripe)
    declined = create(localstripe, {**INTENT, "payment_method": "pm_card_chargeCustomerFail"}, "declined")
    assert declined.status_code == 402
    error = declined.json()["error"]
    assert error["payment_method"]["card"]["last4"] == "0341"
    assert error["payment_intent"]["last_payment_error"]["payment_method"]["card"]["last4"] == "0341"


def test_search_results_expand_their_data(localstripe):
    localstripe_server.reset(localstripe)
    create(localstripe, {**INTENT, "metadata[payment_id]": "42"}, "searched")
    found = search(localstripe, "metadata['payment_id']:'42'", **{"expand[]": "data.latest_charge"}).json()["data"]
    assert found[0]["latest_charge"]["payment_method_details"]["card"]["last4"] == "4242"


def test_card_brands_from_numbers_as_stripe_names_them():
    assert [
        localstripe_server.card_brand(number)
        for number in (
            "4242424242424242",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "6011111111111117",
            "3056930009020004",
            "3566002020360505",
            "6200000000000005",
            "9999999999999999",
        )
    ] == ["visa", "mastercard", "mastercard", "amex", "discover", "diners", "jcb", "unionpay", "unknown"]
