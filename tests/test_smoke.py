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
