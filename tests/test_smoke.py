from http import HTTPStatus


def test_home_anonymous_offers_sign_in(client, db):
    response = client.get("/")
    assert response.status_code == HTTPStatus.OK
    assert b"Sign in with email" in response.content


def test_home_signed_in_shows_header(signed_in_client, user):
    response = signed_in_client.get("/")
    assert b"alice@example.com" in response.content
    assert b"Credits: <strong" in response.content


def test_billing_page(signed_in_client):
    response = signed_in_client.get("/billing/")
    assert response.status_code == HTTPStatus.OK
    assert b"Starter" in response.content


def test_billing_page_explains_a_failed_payment(signed_in_client, user):
    from billing.models import CreditPack, Payment

    pack = CreditPack.objects.get(slug="starter")
    Payment.objects.create(
        user=user,
        pack=pack,
        credits=5,
        amount=500,
        currency="usd",
        status="failed",
        failure_message="Stripe's words.",
        failure_code="expired_card",
    )
    response = signed_in_client.get("/billing/")
    assert b"Failed" in response.content
    # In words for the customer; Stripe's own stay in the admin.
    assert b"Your card has expired." in response.content
    assert b"words." not in response.content
