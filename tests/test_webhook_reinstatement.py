"""Money Stripe gives back: a dispute the merchant wins, a refund that fails. The credits taken
back come back once (a `reinstatement` ledger entry), whichever of Stripe's events says so, in
any order, any number of times, concurrently. Inquiries move no money and change nothing.

Events are built from the real-shaped JSON in tests/stripe_events/ and signed locally
(localstripe never sends them); refund failures are checked against a live localstripe, since
the webhook asks Stripe for the charge's refunds."""

import itertools
from http import HTTPStatus

import pytest
from django.test import Client

from billing import charges, ledger, stripe_gateway
from billing.models import LedgerEntry, Payment, StripeEvent
from billing.refunds import refund_payment
from tests import stripe_events as events
from tests.conftest import run_in_processes

Kind = LedgerEntry.Kind
Status = Payment.Status
WON = [("charge.dispute.closed", "won"), ("charge.dispute.funds_reinstated", "won")]


@pytest.fixture
def credited(client, user):
    payment = events.make_payment(user)
    assert events.post(client, events.intent_succeeded(payment)).status_code == HTTPStatus.OK
    assert ledger.get_balance(user) == 5
    return payment


@pytest.fixture
def paid(localstripe, user):
    """A payment charged at localstripe through a PaymentIntent, and credited (5 credits)."""
    result = charges.start_charge(user, pack_slug="starter", payment_method="pm_card_visa")
    assert result.status == "succeeded"
    return result.payment


def _entries(payment):
    return list(LedgerEntry.objects.filter(payment=payment).order_by("id").values_list("kind", "delta"))


def _post_ok(client, event) -> str:
    response = events.post(client, event)
    assert response.status_code == HTTPStatus.OK, response.content
    return response.json()["status"]


def _charge_of(payment) -> str:
    return stripe_gateway.retrieve_payment_intent(payment.stripe_payment_intent_id).latest_charge_id


# --- disputes -------------------------------------------------------------------------------


@pytest.mark.parametrize(("event_type", "status"), WON)
def test_a_won_dispute_gives_the_credits_back(client, credited, user, make_user, event_type, status):
    dispute_id = "dp_1Q2bWxFq2Ydq7PHJwon00001"
    _post_ok(client, events.dispute(credited, dispute_id=dispute_id))
    assert ledger.get_balance(user) == 0

    assert _post_ok(client, events.dispute(credited, event_type, status=status, dispute_id=dispute_id)) == "processed"

    credited.refresh_from_db()
    assert ledger.get_balance(user) == 5
    assert _entries(credited) == [(Kind.PURCHASE, 5), (Kind.DISPUTE, -5), (Kind.REINSTATEMENT, 5)]
    assert credited.status == Status.SUCCEEDED  # refundable by staff again
    assert (credited.amount_disputed, credited.amount_reinstated) == (500, 500)
    assert (credited.credits_clawed_back, credited.credits_reinstated, credited.credits_unrecovered) == (0, 5, 0)
    staff = Client()
    staff.force_login(make_user("root@example.com", is_staff=True, is_superuser=True))
    page = staff.get(f"/admin/billing/payment/{credited.pk}/change/").content.decode()
    assert "Dispute won: $5.00 returned." in page
    assert "5 credits given back." in page


@pytest.mark.parametrize("order", list(itertools.permutations(["created", "closed", "reinstated", "closed again"])))
def test_won_dispute_events_in_any_order_and_repeated_reinstate_once(client, credited, user, order):
    dispute_id = "dp_1Q2bWxFq2Ydq7PHJorder001"
    build = {
        "created": lambda: events.dispute(credited, dispute_id=dispute_id),
        "closed": lambda: events.dispute(credited, "charge.dispute.closed", status="won", dispute_id=dispute_id),
        "closed again": lambda: events.dispute(credited, "charge.dispute.closed", status="won", dispute_id=dispute_id),
        "reinstated": lambda: events.dispute(
            credited, "charge.dispute.funds_reinstated", status="won", dispute_id=dispute_id
        ),
    }
    delivered = [build[name]() for name in order]
    for event in delivered + delivered[:2]:  # and the first two redelivered
        _post_ok(client, event)
    credited.refresh_from_db()
    assert ledger.get_balance(user) == 5
    assert credited.status == Status.SUCCEEDED
    assert LedgerEntry.objects.filter(payment=credited, kind=Kind.REINSTATEMENT).count() <= 1
    # Whatever came first, what was taken and what came back balance out.
    assert sum(delta for _, delta in _entries(credited)) == 5
    assert credited.credits_clawed_back == 0


@pytest.mark.parametrize("opened_by", ["charge.dispute.created", "charge.dispute.funds_withdrawn"])
def test_a_lost_dispute_changes_nothing_more(client, credited, user, opened_by):
    dispute_id = "dp_1Q2bWxFq2Ydq7PHJlost0001"
    _post_ok(client, events.dispute(credited, opened_by, status="needs_response", dispute_id=dispute_id))
    lost = events.dispute(credited, "charge.dispute.closed", status="lost", dispute_id=dispute_id)
    assert _post_ok(client, lost) == "processed"
    credited.refresh_from_db()
    assert credited.status == Status.DISPUTED
    assert (credited.credits_clawed_back, credited.credits_reinstated, credited.amount_reinstated) == (5, 0, 0)
    assert _entries(credited) == [(Kind.PURCHASE, 5), (Kind.DISPUTE, -5)]
    assert ledger.get_balance(user) == 0


def test_a_won_dispute_gives_back_only_what_was_taken_and_forgives_the_rest(client, credited, user):
    ledger.spend_credits(user, 3, reason="used the product")
    _post_ok(client, events.dispute(credited, dispute_id="dp_1Q2bWxFq2Ydq7PHJspent001"))
    credited.refresh_from_db()
    assert (credited.credits_clawed_back, credited.credits_unrecovered) == (2, 3)

    won = events.dispute(credited, "charge.dispute.closed", status="won", dispute_id="dp_1Q2bWxFq2Ydq7PHJspent001")
    _post_ok(client, won)
    credited.refresh_from_db()
    assert (credited.credits_clawed_back, credited.credits_unrecovered, credited.credits_reinstated) == (0, 0, 2)
    assert ledger.get_balance(user) == 2
    assert _entries(credited) == [(Kind.PURCHASE, 5), (Kind.DISPUTE, -2), (Kind.REINSTATEMENT, 2)]


def test_a_won_dispute_before_the_payment_succeeded_moves_nothing(client, user):
    payment = events.make_payment(user)
    _post_ok(client, events.dispute(payment, "charge.dispute.closed", status="won"))
    _post_ok(client, events.intent_succeeded(payment))
    payment.refresh_from_db()
    assert (payment.status, ledger.get_balance(user)) == (Status.SUCCEEDED, 5)
    assert _entries(payment) == [(Kind.PURCHASE, 5)]


@pytest.mark.parametrize("inquiry", ["warning_needs_response", "warning_under_review", "warning_closed"])
@pytest.mark.parametrize("event_type", ["charge.dispute.created", "charge.dispute.closed"])
def test_an_inquiry_claws_nothing_back(client, credited, user, inquiry, event_type):
    event = events.dispute(credited, event_type, status=inquiry)
    assert _post_ok(client, event) == "ignored"
    assert "inquiry" in StripeEvent.objects.get(event_id=event["id"]).error
    credited.refresh_from_db()
    assert (credited.status, credited.amount_disputed) == (Status.SUCCEEDED, 0)
    assert ledger.get_balance(user) == 5


def test_an_inquiry_does_not_block_a_staff_refund(client, paid, user, make_user):
    _post_ok(client, events.dispute(paid, status="warning_needs_response", charge=_charge_of(paid)))
    refunded = refund_payment(paid, actor=make_user("staff@example.com", is_staff=True))
    assert (refunded.status, refunded.amount_refunded, refunded.credits_clawed_back) == (Status.REFUNDED, 500, 5)
    assert ledger.get_balance(user) == 0


def _deliver_status(body: bytes, header: str) -> int:
    response = Client().post(
        events.WEBHOOK_URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )
    return response.status_code


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_won_dispute_events_from_many_processes_reinstate_once(make_user):
    user = make_user()
    payment = events.make_payment(user)
    dispute_id = "dp_1Q2bWxFq2Ydq7PHJconc0001"
    for event in (events.intent_succeeded(payment), events.dispute(payment, dispute_id=dispute_id)):
        body = events.body_of(event)
        assert _deliver_status(body, events.sign(body)) == HTTPStatus.OK
    assert ledger.get_balance(user) == 0
    # Each of Stripe's two "money back" events, each delivered three times, distinct event ids.
    bodies = [
        events.body_of(events.dispute(payment, event_type, status=status, dispute_id=dispute_id))
        for event_type, status in WON * 3
    ]

    answers = run_in_processes(_deliver_status, [(body, events.sign(body)) for body in bodies])

    assert answers == [HTTPStatus.OK] * 6
    assert _entries(payment) == [(Kind.PURCHASE, 5), (Kind.DISPUTE, -5), (Kind.REINSTATEMENT, 5)]
    assert ledger.get_balance(user) == 5
    payment.refresh_from_db()
    assert (payment.status, payment.credits_reinstated) == (Status.SUCCEEDED, 5)


# --- refunds that fail ----------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["refund.failed", "charge.refund.updated", "refund.updated"])
def test_a_refund_that_fails_gives_back_what_its_clawback_took(client, paid, user, make_user, event_type):
    refund_payment(paid, actor=make_user("staff@example.com", is_staff=True))
    assert ledger.get_balance(user) == 0
    refund = stripe_gateway.retrieve_charge(_charge_of(paid)).refunds[0]
    failed = events.refund_updated(paid, event_type, refund_id=refund.id, amount=500, charge=_charge_of(paid))

    assert _post_ok(client, failed) == "processed"

    paid.refresh_from_db()
    assert ledger.get_balance(user) == 5
    assert _entries(paid) == [(Kind.PURCHASE, 5), (Kind.REFUND, -5), (Kind.REINSTATEMENT, 5)]
    assert paid.status == Status.SUCCEEDED
    assert (paid.amount_refunded, paid.amount_refund_failed, paid.credits_reinstated) == (0, 500, 5)
    # Stripe announces one failure up to three ways, and may repeat each: it counts once.
    for other in ("refund.failed", "charge.refund.updated", "refund.updated"):
        _post_ok(client, events.refund_updated(paid, other, refund_id=refund.id, amount=500, charge=_charge_of(paid)))
    # A charge.refunded from before the failure, delivered late, takes nothing again.
    _post_ok(client, events.charge_refunded(paid, refunds=[(refund.id, 500, "succeeded")], charge=_charge_of(paid)))
    paid.refresh_from_db()
    assert (paid.amount_refunded, paid.status) == (0, Status.SUCCEEDED)
    assert ledger.get_balance(user) == 5
    assert LedgerEntry.objects.filter(payment=paid).count() == 3


def test_a_refund_still_going_through_changes_nothing(client, paid, user, make_user):
    refund_payment(paid, actor=make_user("staff@example.com", is_staff=True), amount=200)
    refund = stripe_gateway.retrieve_charge(_charge_of(paid)).refunds[0]
    update = events.refund_updated(
        paid, "refund.updated", refund_id=refund.id, amount=200, charge=_charge_of(paid), status="succeeded"
    )
    assert _post_ok(client, update) == "ignored"
    assert ledger.get_balance(user) == 3


def test_a_new_refund_after_a_failed_one_claws_back_again(client, credited, user):
    """Stripe's amount_refunded drops when a refund fails: after refund A (200) failed and
    refund B (300) went through, the charge says 300 refunded, below the 200 + 300 ever made."""
    _post_ok(client, events.charge_refunded(credited, refunds=[("re_A1", 200, "succeeded")]))
    _post_ok(client, events.charge_refunded(credited, refunds=[("re_A1", 200, "failed")]))
    credited.refresh_from_db()
    assert (credited.amount_refunded, ledger.get_balance(user)) == (0, 5)

    after = events.charge_refunded(credited, refunds=[("re_A1", 200, "failed"), ("re_B1", 300, "succeeded")])
    assert after["data"]["object"]["amount_refunded"] == 300
    _post_ok(client, after)
    # The oldest state again, late: nothing changes.
    _post_ok(client, events.charge_refunded(credited, refunds=[("re_A1", 200, "succeeded")]))

    credited.refresh_from_db()
    assert (credited.amount_refunded, credited.amount_refund_failed, credited.credits_clawed_back) == (300, 200, 3)
    assert ledger.get_balance(user) == 2
    assert _entries(credited) == [(Kind.PURCHASE, 5), (Kind.REFUND, -2), (Kind.REINSTATEMENT, 2), (Kind.REFUND, -3)]


def test_a_refund_failure_on_a_charges_api_charge_is_ignored(client, paid, user, localstripe):
    charge = stripe_gateway.client().v1.charges.create(
        params={"amount": 500, "currency": "usd", "source": "pm_card_visa"}
    )
    refund = stripe_gateway.client().v1.refunds.create(params={"charge": charge.id})
    event = events.refund_updated(paid, refund_id=refund.id, amount=500, charge=charge.id)
    event["data"]["object"]["payment_intent"] = None
    assert _post_ok(client, event) == "ignored"
    assert ledger.get_balance(user) == 5
