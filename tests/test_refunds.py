"""Refunds through Stripe (billing.refunds and the admin action), against a live localstripe:
a real succeeded payment is refunded at Stripe, and its credits are clawed back at once."""

from http import HTTPStatus

import pytest
from django.test import Client

from billing import charges, ledger, stripe_gateway
from billing.models import LedgerEntry, Payment
from billing.refunds import RefundError, refund_payment
from tests import stripe_events as events

Kind = LedgerEntry.Kind
PAYMENTS_URL = "/admin/billing/payment/"


@pytest.fixture
def paid(localstripe, user):
    """A payment charged with pm_card_visa at localstripe and credited (5 credits for $5.00)."""
    result = charges.start_charge(user, pack_slug="starter", payment_method="pm_card_visa")
    assert result.status == "succeeded"
    assert ledger.get_balance(user) == 5
    return result.payment


@pytest.fixture
def refunder(make_staff):
    return make_staff("refunder@example.com", "view_payment", "refund_payment")


@pytest.fixture
def viewer(make_staff):
    return make_staff("viewer@example.com", "view_payment")


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _refund_action(client, *payments):
    """Choose the refund action for these payments: the confirmation page (or a message)."""
    return client.post(
        PAYMENTS_URL,
        {"action": "refund_through_stripe", "_selected_action": [str(p.pk) for p in payments]},
        follow=True,
    )


def _confirm_refund(client, payment, amount=None, *, page=None):
    """Confirm the refund as the confirmation page's form does (the page's amount unless given)."""
    page = page or _refund_action(client, payment)
    assert page.status_code == HTTPStatus.OK, page.status_code
    form = page.context["form"]
    data = {
        "action": "refund_through_stripe",
        "_selected_action": [str(payment.pk)],
        "post": "yes",
        "amount": form.initial["amount"] if amount is None else amount,
        "refunded_before": form.initial["refunded_before"],
    }
    return client.post(PAYMENTS_URL, data, follow=True)


def _stripe_refunded(payment) -> int:
    """What Stripe itself says was refunded on the payment's charge."""
    intent = stripe_gateway.client().v1.payment_intents.retrieve(
        payment.stripe_payment_intent_id, params={"expand": ["latest_charge"]}
    )
    charge = intent.latest_charge
    if isinstance(charge, str):
        charge = stripe_gateway.client().v1.charges.retrieve(charge)
    return charge.amount_refunded


def _entries(payment):
    return list(LedgerEntry.objects.filter(payment=payment).order_by("id").values_list("kind", "delta"))


# --- the admin action -----------------------------------------------------------------------


def test_admin_refund_refunds_at_stripe_and_claws_back_at_once(paid, user, refunder):
    response = _confirm_refund(_client_for(refunder), paid)
    assert response.status_code == HTTPStatus.OK
    text = response.content.decode()
    assert f"Payment {paid.pk} (alice@example.com): refunded $5.00 in total; 5 credits clawed back." in text

    paid.refresh_from_db()
    assert paid.status == Payment.Status.REFUNDED
    assert (paid.amount_refunded, paid.credits_clawed_back, paid.credits_unrecovered) == (500, 5, 0)
    assert ledger.get_balance(user) == 0
    assert _entries(paid) == [(Kind.PURCHASE, 5), (Kind.REFUND, -5)]
    assert _stripe_refunded(paid) == 500


def test_the_charge_refunded_webhook_after_an_admin_refund_changes_nothing(client, paid, user, refunder):
    _confirm_refund(_client_for(refunder), paid)
    paid.refresh_from_db()
    response = events.post(client, events.charge_refunded(paid, refunds=[500]))
    assert response.status_code == HTTPStatus.OK
    paid.refresh_from_db()
    assert (paid.amount_refunded, paid.credits_clawed_back) == (500, 5)
    assert ledger.get_balance(user) == 0
    assert _entries(paid) == [(Kind.PURCHASE, 5), (Kind.REFUND, -5)]


def test_refunding_twice_is_refused_with_a_clear_message(paid, user, refunder):
    admin_client = _client_for(refunder)
    page = _refund_action(admin_client, paid)
    _confirm_refund(admin_client, paid, page=page)
    again = _refund_action(admin_client, paid)
    assert "not refunded. This payment has already been fully refunded." in again.content.decode()
    assert _stripe_refunded(paid) == 500
    assert _entries(paid) == [(Kind.PURCHASE, 5), (Kind.REFUND, -5)]


def test_refund_after_credits_were_spent_shows_the_shortfall(paid, user, refunder):
    ledger.spend_credits(user, 4, reason="used the product")
    admin_client = _client_for(refunder)
    response = _confirm_refund(admin_client, paid)
    assert "1 credits clawed back, 4 could not be recovered (already spent)." in response.content.decode()
    paid.refresh_from_db()
    assert (paid.credits_clawed_back, paid.credits_unrecovered) == (1, 4)
    assert ledger.get_balance(user) == 0

    page = admin_client.get(f"{PAYMENTS_URL}{paid.pk}/change/").content.decode()
    assert "Refunded $5.00 of $5.00." in page
    assert "1 of 5 credits clawed back." in page
    assert "4 credits could not be recovered" in page


def test_staff_without_the_refund_permission_neither_see_nor_run_the_action(paid, user, viewer):
    viewer_client = _client_for(viewer)
    changelist = viewer_client.get(PAYMENTS_URL)
    assert changelist.status_code == HTTPStatus.OK
    assert b"refund_through_stripe" not in changelist.content

    assert _refund_action(viewer_client, paid).status_code == HTTPStatus.FORBIDDEN
    confirmed = viewer_client.post(
        PAYMENTS_URL,
        {"action": "refund_through_stripe", "_selected_action": [str(paid.pk)], "post": "yes", "amount": "5.00"},
    )
    assert confirmed.status_code == HTTPStatus.FORBIDDEN

    paid.refresh_from_db()
    assert paid.status == Payment.Status.SUCCEEDED
    assert ledger.get_balance(user) == 5
    assert _stripe_refunded(paid) == 0


def test_the_action_is_offered_to_staff_with_the_permission(paid, refunder):
    assert b'value="refund_through_stripe"' in _client_for(refunder).get(PAYMENTS_URL).content


def test_one_payment_at_a_time(localstripe, paid, user, make_user, refunder):
    unpaid = events.make_payment(make_user())
    response = _refund_action(_client_for(refunder), paid, unpaid)
    assert "Refunds are made one payment at a time: select a single payment." in response.content.decode()
    assert response.redirect_chain == [(PAYMENTS_URL, HTTPStatus.FOUND)]
    paid.refresh_from_db()
    assert (paid.amount_refunded, ledger.get_balance(user), _stripe_refunded(paid)) == (0, 5, 0)


def test_an_unpaid_payment_gets_a_message_not_a_page(localstripe, make_user, refunder):
    unpaid = events.make_payment(make_user())
    response = _refund_action(_client_for(refunder), unpaid)
    text = response.content.decode()
    assert f"Payment {unpaid.pk}: not refunded. Only a succeeded payment can be refunded; this one is pending." in text
    assert "Confirm the refund" not in text


def test_stripe_unreachable_leaves_everything_as_it_was(paid, user, refunder, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # discard port: nothing listens
    response = _confirm_refund(_client_for(refunder), paid)
    assert f"Payment {paid.pk}: not refunded. We could not reach the payment provider." in response.content.decode()
    paid.refresh_from_db()
    assert (paid.status, paid.amount_refunded) == (Payment.Status.SUCCEEDED, 0)
    assert ledger.get_balance(user) == 5


# --- the confirmation page ------------------------------------------------------------------


def test_the_action_shows_the_payment_and_a_preview_and_refunds_nothing(paid, user, refunder):
    ledger.spend_credits(user, 4, reason="used the product")
    page = _refund_action(_client_for(refunder), paid)
    assert page.templates[0].name == "admin/billing/payment/refund_confirmation.html"
    text = page.content.decode()
    assert "alice@example.com" in text
    assert "Starter: 5 credits for $5.00" in text
    assert 'name="amount" value="5.00"' in text
    assert "Refunding $5.00 will:" in text
    assert "take back 1 credit from the customer's balance." in text
    assert "4 more credits are due back but the customer has already spent them" in text
    paid.refresh_from_db()
    assert (paid.amount_refunded, paid.credits_clawed_back, _stripe_refunded(paid)) == (0, 0, 0)
    assert ledger.get_balance(user) == 1


def test_a_partial_refund_from_the_page_claws_back_proportionally(paid, user, refunder):
    admin_client = _client_for(refunder)
    response = _confirm_refund(admin_client, paid, "2.00")
    assert f"Payment {paid.pk} (alice@example.com): refunded $2.00 in total; 2 credits clawed back." in (
        response.content.decode()
    )
    paid.refresh_from_db()
    assert (paid.status, paid.amount_refunded, paid.credits_clawed_back) == ("succeeded", 200, 2)
    assert ledger.get_balance(user) == 3
    assert _stripe_refunded(paid) == 200

    page = _refund_action(admin_client, paid)  # the rest, offered by default
    text = page.content.decode()
    assert 'name="amount" value="3.00"' in text
    assert "take back 3 credits" in text
    _confirm_refund(admin_client, paid, page=page)
    paid.refresh_from_db()
    assert (paid.status, paid.amount_refunded, paid.credits_clawed_back) == ("refunded", 500, 5)
    assert _entries(paid) == [(Kind.PURCHASE, 5), (Kind.REFUND, -2), (Kind.REFUND, -3)]


def test_submitting_the_same_page_twice_refunds_once(paid, user, refunder):
    admin_client = _client_for(refunder)
    page = _refund_action(admin_client, paid)
    _confirm_refund(admin_client, paid, "1.50", page=page)
    again = _confirm_refund(admin_client, paid, "1.50", page=page)
    assert "This payment was refunded since this page was shown" in again.content.decode()
    assert 'name="amount" value="3.50"' in again.content.decode()  # a fresh page, the figures of now
    paid.refresh_from_db()
    assert (paid.amount_refunded, paid.credits_clawed_back) == (150, 1)
    assert _stripe_refunded(paid) == 150


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("0", "The refund must be above zero and at most the $5.00 not yet refunded."),
        ("-1", "The refund must be above zero and at most the $5.00 not yet refunded."),
        ("5.01", "The refund must be above zero and at most the $5.00 not yet refunded."),
        ("1.234", "Write the amount as money, for example 5.00."),
        ("lots", "Write the amount as money, for example 5.00."),
        ("", "This field is required."),
        ("NaN", "Write the amount as money, for example 5.00."),
    ],
)
def test_a_bad_amount_is_refused_with_a_message_and_nothing_refunded(paid, user, refunder, amount, message):
    response = _confirm_refund(_client_for(refunder), paid, amount)
    text = response.content.decode()
    assert "Nothing was refunded. Please correct the error below." in text
    assert message in text
    paid.refresh_from_db()
    assert (paid.amount_refunded, paid.credits_clawed_back, _stripe_refunded(paid)) == (0, 0, 0)
    assert ledger.get_balance(user) == 5


def test_cancel_changes_nothing(paid, user, refunder):
    admin_client = _client_for(refunder)
    page = _refund_action(admin_client, paid)
    assert f'href="{PAYMENTS_URL}" class="closelink"' in page.content.decode()
    assert admin_client.get(PAYMENTS_URL).status_code == HTTPStatus.OK
    paid.refresh_from_db()
    assert (paid.status, paid.amount_refunded, _stripe_refunded(paid)) == (Payment.Status.SUCCEEDED, 0, 0)
    assert ledger.get_balance(user) == 5


# --- refund_payment itself ------------------------------------------------------------------


def test_partial_refunds_claw_back_proportionally(paid, user, refunder):
    payment = refund_payment(paid, actor=refunder, amount=200)
    assert (payment.amount_refunded, payment.credits_clawed_back, payment.status) == (200, 2, "succeeded")
    assert ledger.get_balance(user) == 3
    assert _stripe_refunded(paid) == 200

    payment = refund_payment(paid, actor=refunder)  # the rest
    assert (payment.amount_refunded, payment.credits_clawed_back, payment.status) == (500, 5, "refunded")
    assert ledger.get_balance(user) == 0
    assert _stripe_refunded(paid) == 500
    assert _entries(paid) == [(Kind.PURCHASE, 5), (Kind.REFUND, -2), (Kind.REFUND, -3)]


@pytest.mark.parametrize("amount", [0, -1, 501, "100", 2.5, True])
def test_bad_amounts_are_refused_before_stripe(paid, user, refunder, amount):
    with pytest.raises(RefundError):
        refund_payment(paid, actor=refunder, amount=amount)
    assert _stripe_refunded(paid) == 0
    assert ledger.get_balance(user) == 5


def test_more_than_what_is_left_is_refused(paid, refunder):
    refund_payment(paid, actor=refunder, amount=400)
    with pytest.raises(RefundError) as refused:
        refund_payment(paid, actor=refunder, amount=101)
    assert refused.value.user_message.endswith("at most the $1.00 not yet refunded.")
    assert _stripe_refunded(paid) == 400


@pytest.mark.parametrize("status", ["pending", "requires_action", "failed"])
def test_unpaid_payments_cannot_be_refunded(localstripe, user, refunder, status):
    payment = events.make_payment(user, status=status)
    with pytest.raises(RefundError) as refused:
        refund_payment(payment, actor=refunder)
    assert refused.value.user_message.startswith("Only a succeeded payment can be refunded")
    payment.refresh_from_db()
    assert payment.amount_refunded == 0


def test_a_disputed_payment_cannot_be_refunded(client, paid, user, refunder):
    events.post(client, events.dispute_created(paid))
    with pytest.raises(RefundError) as refused:
        refund_payment(paid, actor=refunder)
    assert "disputed" in refused.value.user_message
    assert _stripe_refunded(paid) == 0


def test_a_refund_stripe_refuses_is_reported(localstripe, user, refunder):
    # Our record says succeeded, but Stripe does not know the intent (restored from another
    # environment's backup, say): Stripe's refusal reaches staff, and nothing is clawed back.
    payment = events.make_payment(user)
    ledger.add_credits(user, 5, kind=Kind.PURCHASE, reason="test purchase", payment=payment)
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.SUCCEEDED)
    with pytest.raises(RefundError) as refused:
        refund_payment(payment, actor=refunder)
    assert refused.value.user_message.startswith("Stripe refused the refund:")
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.credits_clawed_back) == (0, 0)
    assert ledger.get_balance(user) == 5
