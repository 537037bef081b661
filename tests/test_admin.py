"""Staff tools in the admin, through the HTTP client: the adjust form and who may use it, and the
read-only ledger, payments and events."""

import re
import uuid
from http import HTTPStatus

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.ledger import add_credits, get_balance, spend_credits
from billing.models import CreditPack, LedgerEntry, Payment, Profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def adjuster(make_staff):
    """Staff who may adjust credits (and view/change profiles), but is not a superuser."""
    return make_staff("adjuster@example.com", "adjust_credits", "view_profile", "change_profile", "view_ledgerentry")


@pytest.fixture
def plain_staff(make_staff):
    """Staff who may look at and change profiles, but not adjust credits."""
    return make_staff("staff@example.com", "view_profile", "change_profile")


@pytest.fixture
def superuser(make_user):
    return make_user("root@example.com", is_staff=True, is_superuser=True)


def adjust_url(user):
    return reverse("admin:billing_profile_adjust", args=[user.profile.pk])


def form_request_id(client, user):
    response = client.get(adjust_url(user))
    assert response.status_code == HTTPStatus.OK
    match = re.search(rb'name="request_id" value="([0-9a-f-]{36})"', response.content)
    assert match, "the adjust form carries a one-time request id"
    return match.group(1).decode()


def post_adjust(client, user, **data):
    data.setdefault("request_id", str(uuid.uuid4()))
    data.setdefault("staff_note", "asked by phone, ticket 4711")
    return client.post(adjust_url(user), data)


def ledger_snapshot():
    return list(LedgerEntry.objects.order_by("id").values_list("id", "delta"))


# --- the adjust form ---------------------------------------------------------------------------


def test_adjuster_adds_credits_recorded_with_actor_and_reason(client, adjuster, user):
    client.force_login(adjuster)
    request_id = form_request_id(client, user)

    response = post_adjust(client, user, delta="7", reason="  goodwill for outage  ", request_id=request_id)

    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == reverse("admin:billing_profile_change", args=[user.profile.pk])
    assert get_balance(user) == 7
    entry = LedgerEntry.objects.get()
    assert (entry.delta, entry.kind, entry.reason, entry.actor, entry.balance_after) == (
        7,
        LedgerEntry.Kind.ADJUSTMENT,
        "goodwill for outage",
        adjuster,
        7,
    )
    page = client.get(response["Location"])
    assert b"Adjusted alice@example.com by +7 credits; the balance is 7." in page.content


def test_adjuster_removes_credits_with_negative_delta(client, adjuster, user):
    add_credits(user, 10, kind=LedgerEntry.Kind.BONUS, reason="start")
    client.force_login(adjuster)

    response = post_adjust(client, user, delta="-4", reason="duplicate grant")

    assert response.status_code == HTTPStatus.FOUND
    assert get_balance(user) == 6
    assert LedgerEntry.objects.first().delta == -4


def test_resubmitted_form_applies_once(client, adjuster, user):
    client.force_login(adjuster)
    request_id = form_request_id(client, user)

    first = post_adjust(client, user, delta="3", reason="refund by hand", request_id=request_id)
    again = post_adjust(client, user, delta="3", reason="refund by hand", request_id=request_id)

    assert first.status_code == again.status_code == HTTPStatus.FOUND
    assert get_balance(user) == 3
    assert LedgerEntry.objects.count() == 1
    page = client.get(again["Location"])
    assert b"already been applied" in page.content


def test_resubmitted_form_with_other_values_is_refused(client, adjuster, user):
    client.force_login(adjuster)
    request_id = form_request_id(client, user)
    post_adjust(client, user, delta="3", reason="first", request_id=request_id)

    response = post_adjust(client, user, delta="5", reason="second", request_id=request_id)

    assert response.status_code == HTTPStatus.OK
    assert b"already submitted with other values" in response.content
    assert get_balance(user) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"delta": "0", "reason": "nothing"}, b"Enter a non-zero number of credits."),
        ({"delta": "abc", "reason": "letters"}, b"Enter a whole number."),
        ({"delta": "1.5", "reason": "fraction"}, b"Enter a whole number."),
        ({"delta": "", "reason": "empty"}, b"This field is required."),
        ({"delta": "5", "reason": "x", "staff_note": ""}, b"A staff note is required: who asked, and why."),
        ({"delta": "5", "reason": "x", "staff_note": "   "}, b"A staff note is required: who asked, and why."),
        ({"delta": "5", "reason": "x", "staff_note": "n" * 501}, b"Ensure this value has at most 500 characters"),
        ({"delta": "5", "reason": "x" * 256}, b"Ensure this value has at most 255 characters"),
        ({"delta": "5", "reason": "no id", "request_id": "not-a-uuid"}, b"reload the page"),
        ({"delta": "-3", "reason": "too much"}, b"The balance is 2; it cannot go below zero."),
    ],
)
def test_bad_input_shows_form_error_and_changes_nothing(client, adjuster, user, data, message):
    add_credits(user, 2, kind=LedgerEntry.Kind.BONUS, reason="start")
    before = ledger_snapshot()
    client.force_login(adjuster)

    response = post_adjust(client, user, **data)

    assert response.status_code == HTTPStatus.OK
    assert message in response.content
    assert get_balance(user) == 2
    assert ledger_snapshot() == before


def test_staff_without_permission_gets_403_and_nothing_changes(client, plain_staff, user):
    client.force_login(plain_staff)

    assert client.get(adjust_url(user)).status_code == HTTPStatus.FORBIDDEN
    response = post_adjust(client, user, delta="100", reason="sneaky")

    assert response.status_code == HTTPStatus.FORBIDDEN
    assert get_balance(user) == 0
    assert not LedgerEntry.objects.exists()


def test_staff_without_permission_sees_no_adjust_button(client, plain_staff, user):
    client.force_login(plain_staff)
    response = client.get(reverse("admin:billing_profile_change", args=[user.profile.pk]))
    assert response.status_code == HTTPStatus.OK
    assert adjust_url(user).encode() not in response.content


def test_adjuster_sees_adjust_button_on_profile_page(client, adjuster, user):
    client.force_login(adjuster)
    response = client.get(reverse("admin:billing_profile_change", args=[user.profile.pk]))
    assert response.status_code == HTTPStatus.OK
    assert adjust_url(user).encode() in response.content


@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_is_sent_to_admin_login(client, user, method):
    url = adjust_url(user)
    response = getattr(client, method)(url, {"delta": "5", "reason": "x", "request_id": str(uuid.uuid4())})
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"].startswith(reverse("admin:login"))
    assert get_balance(user) == 0


def test_non_staff_user_is_sent_to_admin_login(client, user, other_user):
    client.force_login(other_user)
    response = post_adjust(client, user, delta="5", reason="self-service?")
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"].startswith(reverse("admin:login"))
    assert get_balance(user) == 0


def test_unknown_profile_is_404(client, adjuster):
    client.force_login(adjuster)
    assert client.get("/admin/billing/profile/999999/adjust/").status_code == HTTPStatus.NOT_FOUND
    assert client.get("/admin/billing/profile/abc/adjust/").status_code == HTTPStatus.NOT_FOUND


# --- profiles: credits read-only ---------------------------------------------------------------


def test_profile_form_has_no_credits_input_and_ignores_posted_credits(client, superuser, user):
    add_credits(user, 4, kind=LedgerEntry.Kind.BONUS, reason="welcome bonus 42")
    client.force_login(superuser)
    url = reverse("admin:billing_profile_change", args=[user.profile.pk])

    page = client.get(url)
    assert page.status_code == HTTPStatus.OK
    assert b'name="credits"' not in page.content
    # The newest ledger entries are shown on the profile page, with a link to all of them.
    assert b"<td>+4</td><td>4</td><td>welcome bonus 42</td>" in page.content
    ledger_link = f"/admin/billing/ledgerentry/?profile__id__exact={user.profile.pk}"
    assert ledger_link.encode() in page.content

    response = client.post(url, {"credits": "1000", "stripe_customer_id": "cus_123"})
    assert response.status_code == HTTPStatus.FOUND
    profile = Profile.objects.get(user=user)
    assert profile.credits == 4
    assert profile.stripe_customer_id == "cus_123"


def test_profiles_searchable_by_email(client, superuser, user, other_user):
    client.force_login(superuser)
    response = client.get(reverse("admin:billing_profile_changelist"), {"q": "ALICE@"})
    assert response.status_code == HTTPStatus.OK
    assert b"alice@example.com" in response.content
    assert b"bob@example.com" not in response.content

    whole_address = client.get(reverse("admin:billing_profile_changelist"), {"q": " BOB@Example.com "})
    assert b"bob@example.com" in whole_address.content
    assert b"alice@example.com" not in whole_address.content


def test_profiles_cannot_be_added_or_deleted(client, superuser, user):
    client.force_login(superuser)
    assert client.get(reverse("admin:billing_profile_add")).status_code == HTTPStatus.FORBIDDEN
    delete = reverse("admin:billing_profile_delete", args=[user.profile.pk])
    assert client.post(delete, {"post": "yes"}).status_code == HTTPStatus.FORBIDDEN
    assert Profile.objects.filter(user=user).exists()


# --- the ledger: read-only and a fixed number of queries ---------------------------------------


def test_ledger_admin_is_read_only(client, superuser, user):
    entry = add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="welcome")
    client.force_login(superuser)
    change_url = reverse("admin:billing_ledgerentry_change", args=[entry.pk])

    assert client.get(reverse("admin:billing_ledgerentry_add")).status_code == HTTPStatus.FORBIDDEN
    page = client.get(change_url)
    assert page.status_code == HTTPStatus.OK
    assert b'name="delta"' not in page.content
    assert b'name="_save"' not in page.content

    assert client.post(change_url, {"delta": "500", "reason": "edited"}).status_code == HTTPStatus.FORBIDDEN
    delete_url = reverse("admin:billing_ledgerentry_delete", args=[entry.pk])
    assert client.post(delete_url, {"post": "yes"}).status_code == HTTPStatus.FORBIDDEN
    bulk = client.post(
        reverse("admin:billing_ledgerentry_changelist"),
        {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"},
    )
    assert bulk.status_code in (HTTPStatus.OK, HTTPStatus.FOUND)
    entry_after = LedgerEntry.objects.get(pk=entry.pk)
    assert (entry_after.delta, entry_after.reason) == (5, "welcome")


def test_ledger_changelist_queries_do_not_grow_with_rows(client, superuser, make_user):
    client.force_login(superuser)
    url = reverse("admin:billing_ledgerentry_changelist")

    def queries_for_page():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == HTTPStatus.OK
        return len(ctx.captured_queries)

    first = make_user()
    add_credits(first, 1, kind=LedgerEntry.Kind.BONUS, reason="one", actor=superuser)
    few = queries_for_page()
    for _ in range(10):
        someone = make_user()
        add_credits(someone, 3, kind=LedgerEntry.Kind.BONUS, reason="many", actor=superuser)
        spend_credits(someone, 1, reason="spend")
    assert queries_for_page() == few


def test_ledger_filters_and_search(client, superuser, user, other_user):
    add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="welcome bonus")
    spend_credits(user, 1, reason="fortune", idempotency_key="spend-key-1")
    add_credits(other_user, 2, kind=LedgerEntry.Kind.BONUS, reason="other")
    client.force_login(superuser)
    url = reverse("admin:billing_ledgerentry_changelist")

    spends = client.get(url, {"kind__exact": "spend"})
    assert spends.status_code == HTTPStatus.OK
    assert b"fortune" in spends.content and b"welcome bonus" not in spends.content

    by_email = client.get(url, {"q": "bob@example.com"})
    assert b"other" in by_email.content and b"fortune" not in by_email.content

    by_key = client.get(url, {"q": "spend-key-1"})
    assert b"fortune" in by_key.content and b"welcome bonus" not in by_key.content

    by_profile = client.get(url, {"profile__id__exact": user.profile.pk})
    assert by_profile.status_code == HTTPStatus.OK
    assert b"fortune" in by_profile.content and b"bob@example.com" not in by_profile.content


# --- packs editable, payments and events read-only ---------------------------------------------


def test_pack_is_editable(client, superuser):
    client.force_login(superuser)
    pack = CreditPack.objects.get(slug="starter")
    url = reverse("admin:billing_creditpack_change", args=[pack.pk])
    response = client.post(
        url, {"slug": "starter", "name": "Starter", "credits": "6", "amount": "500", "currency": "USD", "active": "on"}
    )
    assert response.status_code == HTTPStatus.FOUND
    pack.refresh_from_db()
    assert (pack.credits, pack.currency) == (6, "usd")


def test_payment_admin_is_read_only_and_shows_unrecovered_credits(client, superuser, user):
    pack = CreditPack.objects.get(slug="starter")
    payment = Payment.objects.create(
        user=user,
        pack=pack,
        credits=5,
        amount=500,
        currency="usd",
        status=Payment.Status.REFUNDED,
        amount_refunded=500,
        credits_clawed_back=2,
        credits_unrecovered=3,
    )
    client.force_login(superuser)

    listing = client.get(reverse("admin:billing_payment_changelist"))
    assert listing.status_code == HTTPStatus.OK
    assert b"3 not recovered" in listing.content
    assert b"$5.00" in listing.content
    only_unrecovered = client.get(reverse("admin:billing_payment_changelist"), {"unrecovered": "yes"})
    assert b"3 not recovered" in only_unrecovered.content

    change_url = reverse("admin:billing_payment_change", args=[payment.pk])
    assert b"3 not recovered" in client.get(change_url).content
    assert client.post(change_url, {"status": "succeeded"}).status_code == HTTPStatus.FORBIDDEN
    assert client.get(reverse("admin:billing_payment_add")).status_code == HTTPStatus.FORBIDDEN
    delete_url = reverse("admin:billing_payment_delete", args=[payment.pk])
    assert client.post(delete_url, {"post": "yes"}).status_code == HTTPStatus.FORBIDDEN
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REFUNDED


def test_stripe_event_admin_is_read_only(client, superuser):
    from billing.models import StripeEvent

    event = StripeEvent.objects.create(event_id="evt_123", type="charge.refunded", payload={"id": "evt_123"})
    client.force_login(superuser)
    assert client.get(reverse("admin:billing_stripeevent_changelist")).status_code == HTTPStatus.OK
    page = client.get(reverse("admin:billing_stripeevent_change", args=[event.pk]))
    assert page.status_code == HTTPStatus.OK
    assert b"&quot;evt_123&quot;" in page.content
    assert client.get(reverse("admin:billing_stripeevent_add")).status_code == HTTPStatus.FORBIDDEN
    change_url = reverse("admin:billing_stripeevent_change", args=[event.pk])
    assert client.post(change_url, {"status": "processed"}).status_code == HTTPStatus.FORBIDDEN


def test_wide_lists_fit_1280_without_the_app_sidebar(client, superuser, user):
    """Payments, ledger and grants go without the admin's app sidebar and load billing's list
    stylesheet, so their last columns are not clipped at 1280 px; the headers are short."""
    add_credits(user, 5, kind=LedgerEntry.Kind.BONUS, reason="welcome")
    Payment.objects.create(
        user=user, pack=CreditPack.objects.get(slug="starter"), credits=5, amount=500, currency="usd"
    )
    client.force_login(superuser)
    for name in ("payment", "ledgerentry", "creditgrant"):
        page = client.get(reverse(f"admin:billing_{name}_changelist"))
        assert page.status_code == HTTPStatus.OK
        assert b'id="nav-sidebar"' not in page.content
        assert b"billing/admin/lists.css" in page.content
    payments = client.get(reverse("admin:billing_payment_changelist")).content.lower()
    assert b"clawed back" in payments and b"not recovered" in payments
    # Other admin pages keep the sidebar.
    assert b'id="nav-sidebar"' in client.get(reverse("admin:billing_profile_changelist")).content
