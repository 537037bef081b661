"""The header's account menu and allauth's email page (README, "Architecture": accounts/)."""

import pytest
from allauth.account.models import EmailAddress

pytestmark = pytest.mark.django_db


def _menu(html: str) -> str:
    start = html.index('data-testid="account-menu"')
    return html[start : html.index("</details>", start)]


def test_signed_in_header_has_an_account_menu(signed_in_client, user):
    menu = _menu(signed_in_client.get("/").content.decode())
    assert user.email in menu
    for href in (
        'href="/accounts/email/"',
        'href="/accounts/password/change/"',
        'href="/billing/"',
        'href="/billing/#saved-card"',
        'href="/billing/#auto-recharge"',
    ):
        assert href in menu
    # Signing out stays a POST (a GET link would let any page sign the user out).
    assert 'method="post" action="/accounts/logout/"' in menu
    assert "Sign out" in menu


def test_signed_out_header_has_no_account_menu(client):
    html = client.get("/").content.decode()
    assert 'data-testid="account-menu"' not in html
    assert 'href="/accounts/login/"' in html


def _email_page(client) -> str:
    response = client.get("/accounts/email/")
    assert response.status_code == 200
    return response.content.decode()


def test_email_page_for_the_only_address_offers_no_primary_or_remove(signed_in_client, user):
    EmailAddress.objects.update_or_create(user=user, email=user.email, defaults={"primary": True, "verified": True})
    html = _email_page(signed_in_client)
    assert 'name="action_primary"' not in html
    assert 'name="action_remove"' not in html
    assert 'name="action_send"' not in html  # verified already
    assert 'data-testid="email-only-note"' in html
    assert 'name="action_add"' in html


def test_email_page_for_an_unverified_only_address_can_resend(signed_in_client, user):
    EmailAddress.objects.update_or_create(user=user, email=user.email, defaults={"primary": True, "verified": False})
    html = _email_page(signed_in_client)
    assert 'name="action_send"' in html
    assert 'name="action_primary"' not in html
    assert 'name="action_remove"' not in html


def test_email_page_for_two_addresses_offers_every_action(signed_in_client, user):
    EmailAddress.objects.update_or_create(user=user, email=user.email, defaults={"primary": True, "verified": True})
    EmailAddress.objects.create(user=user, email="alice.new@example.com", primary=False, verified=False)
    html = _email_page(signed_in_client)
    for action in ("action_primary", "action_send", "action_remove"):
        assert f'name="{action}"' in html
    assert 'data-testid="email-only-note"' not in html
