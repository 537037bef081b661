"""Holds in the admin, through the HTTP client: active holds on a profile's page, the read-only
hold changelist (status filter, email search, how each ended, its capture entry), and releasing
an active hold (list action, button on its page) only with `billing.release_hold`."""

import re
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing import ledger
from billing.models import Hold, LedgerEntry, Profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def releaser(make_staff):
    return make_staff("releaser@example.com", "release_hold", "view_hold", "view_profile", "view_ledgerentry")


@pytest.fixture
def viewer(make_staff):
    return make_staff("viewer@example.com", "view_*")


@pytest.fixture
def superuser(make_user):
    return make_user("root@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def funded(user):
    ledger.add_credits(user, 10, kind=LedgerEntry.Kind.BONUS, reason="seed")
    return user


def changelist():
    return reverse("admin:billing_hold_changelist")


def hold_page(hold):
    return reverse("admin:billing_hold_change", args=[hold.pk])


def release_url(hold):
    return reverse("admin:billing_hold_release", args=[hold.pk])


def listed_ids(client, query=""):
    response = client.get(changelist() + query)
    assert response.status_code == HTTPStatus.OK
    return set(map(int, re.findall(rb"/admin/billing/hold/(\d+)/change/", response.content)))


def status_of(hold):
    hold.refresh_from_db()
    return hold.status


def test_profile_page_shows_active_holds_only(client, viewer, funded):
    active = ledger.hold_credits(funded, 3, reason="AI answer running")
    ledger.release_hold(ledger.hold_credits(funded, 2, reason="released earlier"))
    client.force_login(viewer)
    page = client.get(reverse("admin:billing_profile_change", args=[funded.profile.pk]))
    assert page.status_code == HTTPStatus.OK
    text = page.content.decode()
    assert "Active holds" in text
    assert "AI answer running" in text and "released earlier" not in text
    assert f"/admin/billing/hold/{active.pk}/change/" in text  # the hold's page has Release
    assert "3 credits reserved by active holds" in text
    assert f"/admin/billing/hold/?profile__id__exact={funded.profile.pk}" in text


def test_changelist_filters_by_status_searches_by_email_and_shows_how_holds_ended(
    client, superuser, funded, other_user
):
    ledger.add_credits(other_user, 5, kind=LedgerEntry.Kind.BONUS, reason="seed")
    active = ledger.hold_credits(funded, 2, reason="running")
    captured = ledger.hold_credits(funded, 3, reason="answered")
    entry = ledger.capture_hold(captured, 2)
    released = ledger.release_hold(ledger.hold_credits(other_user, 1, reason="given up"))
    client.force_login(superuser)
    assert listed_ids(client) == {active.pk, captured.pk, released.pk}
    assert listed_ids(client, "?status__exact=active") == {active.pk}
    assert listed_ids(client, "?status__exact=captured") == {captured.pk}
    assert listed_ids(client, "?status__exact=released") == {released.pk}
    assert listed_ids(client, "?q=ALICE@example.com") == {active.pk, captured.pk}
    assert listed_ids(client, "?q=bob") == {released.pk}
    assert listed_ids(client, f"?profile__id__exact={other_user.profile.pk}") == {released.pk}
    page = client.get(hold_page(captured)).content.decode()
    assert "Captured" in page
    assert f'href="/admin/billing/ledgerentry/{entry.pk}/change/">entry {entry.pk} (-2)</a>' in page
    assert "Release this hold" not in page  # an ended hold has no button


def test_changelist_is_read_only_and_its_queries_do_not_grow(client, superuser, funded):
    for n in range(2):
        ledger.hold_credits(funded, 1, reason=f"hold {n}")
    client.force_login(superuser)
    with CaptureQueriesContext(connection) as few:
        client.get(changelist())
    for n in range(8):
        ledger.capture_hold(ledger.hold_credits(funded, 1, reason=f"more {n}"))
    with CaptureQueriesContext(connection) as many:
        client.get(changelist())
    assert len(many) == len(few)
    hold = Hold.objects.first()
    assert client.post(changelist() + "add/", {}).status_code == HTTPStatus.FORBIDDEN
    assert client.post(hold_page(hold), {"amount": "999"}).status_code == HTTPStatus.FORBIDDEN
    delete = reverse("admin:billing_hold_delete", args=[hold.pk])
    assert client.post(delete, {"post": "yes"}).status_code == HTTPStatus.FORBIDDEN
    assert Hold.objects.filter(pk=hold.pk, amount=1).exists()


def test_release_button_frees_the_credits_with_a_message(client, releaser, funded):
    hold = ledger.hold_credits(funded, 4, reason="stuck export")
    assert ledger.get_balance(funded) == 6
    client.force_login(releaser)
    page = client.get(hold_page(hold))
    assert b"Release this hold" in page.content
    assert release_url(hold).encode() in page.content
    response = client.post(release_url(hold), follow=True)
    assert response.redirect_chain[-1][0] == hold_page(hold)
    assert "Released hold" in response.content.decode() and "stuck export" in response.content.decode()
    assert status_of(hold) == Hold.Status.RELEASED
    assert ledger.get_balance(funded) == 10
    assert Profile.objects.get(user=funded).held == 0
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CAPTURE).exists()
    log = LogEntry.objects.get(object_id=str(hold.pk))
    assert (log.user, log.get_change_message()) == (releaser, "Released the hold of 4 credits: stuck export")
    assert b"Release this hold" not in client.get(hold_page(hold)).content


def test_release_action_releases_active_holds_and_leaves_ended_ones(client, releaser, funded):
    first = ledger.hold_credits(funded, 2, reason="one")
    second = ledger.hold_credits(funded, 3, reason="two")
    captured = ledger.hold_credits(funded, 1, reason="done")
    entry = ledger.capture_hold(captured)
    client.force_login(releaser)
    response = client.post(
        changelist(),
        {"action": "release_selected", "_selected_action": [first.pk, second.pk, captured.pk]},
        follow=True,
    )
    text = response.content.decode()
    assert text.count("Released hold") == 2
    assert f"Hold {captured.pk} (alice@example.com) had already ended (captured); nothing changed." in text
    assert [status_of(h) for h in (first, second, captured)] == ["released", "released", "captured"]
    captured.refresh_from_db()
    assert (captured.captured, captured.entry_id) == (1, entry.pk)
    assert ledger.get_balance(funded) == 9


@pytest.mark.parametrize("ending", ["released", "captured", "expired"])
def test_releasing_an_ended_hold_changes_nothing(client, releaser, funded, ending):
    hold = ledger.hold_credits(funded, 2, reason="ends")
    if ending == "released":
        ledger.release_hold(hold)
    elif ending == "captured":
        ledger.capture_hold(hold, 1)
    else:
        past = timezone.now() - timedelta(seconds=1)
        Hold.objects.filter(pk=hold.pk).update(expires_at=past)
        Profile.objects.filter(user=funded).update(next_hold_expiry=past)
        assert ledger.expire_credits() is not None  # the periodic sweep ends it
        assert status_of(hold) == "expired"
    hold.refresh_from_db()
    before = (hold.status, hold.captured, hold.ended_at, ledger.get_balance(funded), LedgerEntry.objects.count())
    client.force_login(releaser)
    response = client.post(release_url(hold), follow=True)
    assert response.status_code == HTTPStatus.OK
    assert "nothing changed" in response.content.decode()
    hold.refresh_from_db()
    after = (hold.status, hold.captured, hold.ended_at, ledger.get_balance(funded), LedgerEntry.objects.count())
    assert after == before
    assert not LogEntry.objects.filter(object_id=str(hold.pk)).exists()


def test_staff_without_the_permission_cannot_release(client, viewer, funded):
    hold = ledger.hold_credits(funded, 2, reason="running")
    client.force_login(viewer)  # may view holds, may not release
    page = client.get(hold_page(hold))
    assert page.status_code == HTTPStatus.OK
    assert b"Release this hold" not in page.content
    assert b"release_selected" not in client.get(changelist()).content
    assert client.post(release_url(hold)).status_code == HTTPStatus.FORBIDDEN
    client.post(changelist(), {"action": "release_selected", "_selected_action": [hold.pk]})
    assert status_of(hold) == Hold.Status.ACTIVE
    assert ledger.get_balance(funded) == 8


def test_release_is_a_post_and_an_unknown_hold_is_404(client, releaser, funded):
    hold = ledger.hold_credits(funded, 2, reason="running")
    client.force_login(releaser)
    assert client.get(release_url(hold)).status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert status_of(hold) == Hold.Status.ACTIVE
    missing = reverse("admin:billing_hold_release", args=[hold.pk + 1000])
    assert client.post(missing).status_code == HTTPStatus.NOT_FOUND
    assert client.post("/admin/billing/hold/not-a-number/release/").status_code == HTTPStatus.NOT_FOUND
