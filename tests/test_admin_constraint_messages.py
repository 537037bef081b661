"""The database constraints on what staff edit in the admin speak plainly: a form that breaks one
shows a sentence a staff member understands, never "Constraint “name” is violated."."""

from http import HTTPStatus

import pytest
from django.urls import reverse
from django.utils.html import escape

from billing.models import CreditPack

PACK = {"slug": "big", "name": "Big pack", "credits": "50", "amount": "4000", "currency": "usd", "active": "on"}


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("admin@example.com", is_staff=True, is_superuser=True))
    return client


def assert_shows_plainly(response, message):
    assert response.status_code == HTTPStatus.OK  # the form again, with the error
    page = response.content.decode()
    assert escape(message) in page
    assert "is violated" not in page
    assert "Constraint" not in page


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("amount", "49", "The price must be at least 50 (Stripe's minimum charge)."),
        ("credits", "0", "A pack must give at least 1 credit."),
        ("currency", "us1", "The currency must be a three-letter ISO code, e.g. usd or eur."),
    ],
)
def test_a_pack_that_breaks_a_constraint_is_refused_in_plain_words(staff_client, field, value, message):
    response = staff_client.post(reverse("admin:billing_creditpack_add"), {**PACK, field: value})
    assert_shows_plainly(response, message)
    assert not CreditPack.objects.filter(slug="big").exists()


def test_editing_a_pack_below_the_minimum_price_is_refused_in_plain_words(staff_client):
    pack = CreditPack.objects.get(slug="starter")
    data = {"slug": pack.slug, "name": pack.name, "credits": pack.credits, "amount": "10", "currency": pack.currency}
    response = staff_client.post(reverse("admin:billing_creditpack_change", args=[pack.pk]), data)
    assert_shows_plainly(response, "The price must be at least 50 (Stripe's minimum charge).")
    pack.refresh_from_db()
    assert pack.amount == 500


def test_a_valid_pack_is_still_saved(staff_client):
    response = staff_client.post(reverse("admin:billing_creditpack_add"), PACK)
    assert response.status_code == HTTPStatus.FOUND
    assert CreditPack.objects.get(slug="big").amount == 4000


def test_an_email_taken_in_another_case_is_refused_in_plain_words(staff_client, make_user):
    make_user("taken@example.com")
    other = make_user("free@example.com")
    data = {
        "email": "Taken@Example.com",
        "first_name": "",
        "last_name": "",
        "is_active": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
    }
    response = staff_client.post(reverse("admin:accounts_user_change", args=[other.pk]), data)
    assert_shows_plainly(response, "A user with this email address already exists.")
    other.refresh_from_db()
    assert other.email == "free@example.com"
