"""Credit grants in the admin, through the HTTP client: the Grant credits form and who may use it,
grants on the profile page, the read-only grant changelist and its filters, allocations on a
ledger entry's page, and the pack's validity."""

import re
import uuid
from datetime import date, timedelta
from http import HTTPStatus

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing import ledger
from billing.models import CreditGrant, CreditPack, LedgerEntry, Profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def granter(make_staff):
    return make_staff("granter@example.com", "grant_credits", "view_profile", "view_creditgrant", "view_ledgerentry")


@pytest.fixture
def viewer(make_staff):
    return make_staff("viewer@example.com", "view_*")


@pytest.fixture
def superuser(make_user):
    return make_user("root@example.com", is_staff=True, is_superuser=True)


def grant_url(user):
    return reverse("admin:billing_profile_grant", args=[user.profile.pk])


def post_grant(client, user, **data):
    data.setdefault("request_id", str(uuid.uuid4()))
    data.setdefault("category", "promotional")
    return client.post(grant_url(user), data)


def let_expire(grant):
    """As if the grant's expiry had passed: the clock cannot be moved, so its expiry is."""
    past = timezone.now() - timedelta(seconds=1)
    CreditGrant.objects.filter(pk=grant.pk).update(expires_at=past)
    Profile.objects.filter(pk=grant.profile_id).update(next_expiry=past)


def newest_grant(user):
    return CreditGrant.objects.filter(profile__user=user).order_by("-id").first()


def test_granter_gives_promotional_credits_expiring_in_days(client, granter, user):
    client.force_login(granter)
    response = client.get(grant_url(user))
    assert response.status_code == HTTPStatus.OK
    assert re.search(rb'name="request_id" value="[0-9a-f-]{36}"', response.content)
    response = post_grant(client, user, amount="3", expires_in_days="30", reason="welcome back")
    assert response.status_code == HTTPStatus.FOUND
    grant = newest_grant(user)
    assert (grant.category, grant.source, grant.amount, grant.remaining) == ("promotional", "grant", 3, 3)
    assert abs(grant.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    entry = grant.entry
    assert (entry.kind, entry.delta, entry.reason, entry.actor) == (LedgerEntry.Kind.BONUS, 3, "welcome back", granter)
    assert ledger.get_balance(user) == 3


def test_granter_gives_paid_credits_until_a_date_or_forever(client, granter, user):
    client.force_login(granter)
    day = date.today() + timedelta(days=10)
    assert (
        post_grant(client, user, amount="4", category="paid", expires_on=day.isoformat(), reason="x").status_code == 302
    )
    grant = newest_grant(user)
    assert grant.category == "paid"
    assert timezone.localtime(grant.expires_at).date() == day  # usable until the end of that day
    assert post_grant(client, user, amount="1", reason="forever").status_code == HTTPStatus.FOUND
    assert newest_grant(user).expires_at is None
    assert ledger.get_balance(user) == 5


def test_resubmitted_grant_form_grants_once(client, granter, user):
    client.force_login(granter)
    request_id = str(uuid.uuid4())
    for _ in range(2):
        response = post_grant(client, user, amount="2", reason="once", request_id=request_id)
        assert response.status_code == HTTPStatus.FOUND
    assert ledger.get_balance(user) == 2
    assert CreditGrant.objects.filter(profile__user=user).count() == 1
    page = client.get(reverse("admin:billing_profile_change", args=[user.profile.pk]), follow=True)
    assert page.status_code == HTTPStatus.OK


def test_resubmitted_grant_form_with_other_values_is_refused(client, granter, user):
    client.force_login(granter)
    request_id = str(uuid.uuid4())
    post_grant(client, user, amount="2", reason="once", request_id=request_id)
    response = post_grant(client, user, amount="5", reason="once", request_id=request_id)
    assert response.status_code == HTTPStatus.OK
    assert b"already submitted with other values" in response.content
    assert ledger.get_balance(user) == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"amount": "0", "reason": "x"}, b"greater than or equal to 1"),
        ({"amount": "-3", "reason": "x"}, b"greater than or equal to 1"),
        ({"amount": "abc", "reason": "x"}, b"Enter a whole number"),
        ({"amount": str(10**10), "reason": "x"}, b"less than or equal to"),
        ({"amount": "3", "reason": "x", "category": "gold"}, b"Select a valid choice"),
        ({"amount": "3", "reason": "x", "expires_in_days": "0"}, b"greater than or equal to 1"),
        ({"amount": "3", "reason": "x", "expires_in_days": "99999999"}, b"less than or equal to"),
        ({"amount": "3", "reason": "x", "expires_on": "2001-01-01"}, b"has not passed"),
        ({"amount": "3", "reason": "x", "expires_on": "9999-12-31"}, b"within 100 years"),
        ({"amount": "3", "reason": "x", "expires_on": "tomorrow"}, b"Enter a valid date"),
        ({"amount": "3", "reason": "x", "expires_in_days": "3", "expires_on": "2099-01-01"}, b"not both"),
    ],
)
def test_bad_grant_input_shows_an_error_and_changes_nothing(client, granter, user, data, message):
    client.force_login(granter)
    response = post_grant(client, user, **data)
    assert response.status_code == HTTPStatus.OK
    assert message in response.content
    assert not LedgerEntry.objects.filter(profile__user=user).exists()


def test_the_grant_form_needs_its_permission(client, make_staff, user):
    adjuster = make_staff("adjuster@example.com", "adjust_credits", "view_profile", "change_profile")
    client.force_login(adjuster)
    profile_page = client.get(reverse("admin:billing_profile_change", args=[user.profile.pk]))
    assert b"grant-credits-link" not in profile_page.content
    assert client.get(grant_url(user)).status_code == HTTPStatus.FORBIDDEN
    assert post_grant(client, user, amount="5", reason="x").status_code == HTTPStatus.FORBIDDEN
    assert ledger.get_balance(user) == 0


def test_profile_page_lists_grants_read_only_and_links_the_form(client, granter, user):
    ledger.grant_credits(user, 3, reason="welcome", expires_at=timezone.now() + timedelta(days=5))
    ledger.adjust_credits(user, 7, reason="paid", actor=None)
    client.force_login(granter)
    page = client.get(reverse("admin:billing_profile_change", args=[user.profile.pk]))
    assert page.status_code == HTTPStatus.OK
    html = page.content.decode()
    assert "grant-credits-link" in html
    assert "Credit grants" in html
    assert "Promotional" in html and "Staff adjustment" in html
    assert 'name="grants-0-amount"' not in html  # read-only: no inputs


def test_grant_changelist_filters_and_stays_within_its_queries(client, superuser, user, other_user):
    now = timezone.now()
    ledger.grant_credits(user, 3, reason="soon", expires_at=now + timedelta(days=1))
    ledger.grant_credits(other_user, 2, reason="later", category="paid", expires_at=now + timedelta(days=9))
    ledger.adjust_credits(user, 4, reason="forever", actor=None)
    let_expire(CreditGrant.objects.get(entry__reason="soon"))
    assert ledger.expire_credits() == 3
    client.force_login(superuser)
    url = reverse("admin:billing_creditgrant_changelist")

    def ids(query=""):
        response = client.get(url + query)
        assert response.status_code == HTTPStatus.OK
        return set(map(int, re.findall(rb"/admin/billing/creditgrant/(\d+)/change/", response.content)))

    by_reason = {grant.entry.reason: grant.pk for grant in CreditGrant.objects.select_related("entry")}
    assert ids() == set(by_reason.values())
    assert ids("?category__exact=paid") == {by_reason["later"], by_reason["forever"]}
    assert ids("?state=expired") == {by_reason["soon"]}
    assert ids("?state=open") == {by_reason["later"], by_reason["forever"]}
    assert ids("?state=never") == {by_reason["forever"]}
    assert ids("?source__exact=adjustment") == {by_reason["forever"]}
    assert ids("?q=alice@example.com") == {by_reason["soon"], by_reason["forever"]}
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    for n in range(10):
        ledger.grant_credits(other_user, 1, reason=f"more {n}")
    with CaptureQueriesContext(connection) as many:
        client.get(url)
    assert len(many) == len(few)
    assert client.post(url + "add/", {}).status_code == HTTPStatus.FORBIDDEN


def test_grant_and_ledger_pages_show_the_allocations(client, superuser, user):
    ledger.grant_credits(user, 3, reason="welcome", expires_at=timezone.now() + timedelta(days=5))
    ledger.adjust_credits(user, 4, reason="paid", actor=None)
    spend = ledger.spend_credits(user, 5, reason="five things")
    client.force_login(superuser)
    entry_page = client.get(reverse("admin:billing_ledgerentry_change", args=[spend.pk])).content.decode()
    assert "Drew on" in entry_page
    promo = CreditGrant.objects.get(profile__user=user, category="promotional")
    assert f"/admin/billing/creditgrant/{promo.pk}/change/" in entry_page
    grant_page = client.get(reverse("admin:billing_creditgrant_change", args=[promo.pk])).content.decode()
    assert f"/admin/billing/ledgerentry/{spend.pk}/change/" in grant_page
    assert "five things" in grant_page
    opened = client.get(reverse("admin:billing_ledgerentry_change", args=[promo.entry_id])).content.decode()
    assert "Opened" in opened


def test_pack_validity_is_shown_and_edited(client, superuser):
    client.force_login(superuser)
    pack = CreditPack.objects.get(slug="starter")
    url = reverse("admin:billing_creditpack_change", args=[pack.pk])
    data = {"slug": "starter", "name": pack.name, "credits": pack.credits, "amount": pack.amount, "currency": "usd"}
    assert client.post(url, {**data, "validity_days": "365", "active": "on"}).status_code == HTTPStatus.FOUND
    pack.refresh_from_db()
    assert pack.validity_days == 365
    listing = client.get(reverse("admin:billing_creditpack_changelist")).content.decode()
    assert "365" in listing
    for bad in ("0", "-1", "100000"):
        response = client.post(url, {**data, "validity_days": bad, "active": "on"})
        assert response.status_code == HTTPStatus.OK, bad
    assert client.post(url, {**data, "validity_days": "", "active": "on"}).status_code == HTTPStatus.FOUND
    pack.refresh_from_db()
    assert pack.validity_days is None
