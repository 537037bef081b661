"""Credit grants (docs/DESIGN.md, "Credit grants"): the drawdown order, allocations, expiry at the
boundary and without a sweep, idempotent expiry, clawback from the payment's own grant,
reinstatement into the grants the credits came from, and audit_credits catching each kind of
corruption. Through the ledger's public functions, on PostgreSQL (billing_spend) and SQLite (the
ORM path) alike."""

from datetime import timedelta
from http import HTTPStatus

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from billing import ledger
from billing.exceptions import InsufficientCredits
from billing.ledger import grants
from billing.ledger.invariants import broken_profiles, grant_problems
from billing.models import CreditGrant, CreditPack, GrantAllocation, LedgerEntry, Payment
from tests.stripe_helpers import wait_for

pytestmark = pytest.mark.django_db

Kind = LedgerEntry.Kind
PAID, PROMOTIONAL = CreditGrant.Category.PAID, CreditGrant.Category.PROMOTIONAL


def grant(user, amount, *, category=PROMOTIONAL, days=None, at=None, key=None):
    expires_at = at or (timezone.now() + timedelta(days=days) if days is not None else None)
    entry = ledger.grant_credits(
        user, amount, reason=f"{amount} {category}", category=category, expires_at=expires_at, idempotency_key=key
    )
    return entry.opened_grant


def draws(entry) -> list[tuple[int, int]]:
    return list(GrantAllocation.objects.filter(entry=entry).order_by("id").values_list("grant_id", "amount"))


def assert_books_sound():
    assert list(broken_profiles()) == []
    assert grant_problems() == []


def purchase(user, credits=5, *, days=None) -> Payment:
    pack = CreditPack.objects.get(slug="starter")
    payment = Payment.objects.create(
        user=user, pack=pack, credits=credits, amount=500, currency="usd", status=Payment.Status.SUCCEEDED
    )
    ledger.add_credits(
        user,
        credits,
        kind=Kind.PURCHASE,
        reason="bought",
        payment=payment,
        expires_at=timezone.now() + timedelta(days=days) if days else None,
    )
    return payment


# --- opening grants ----------------------------------------------------------------------------


def test_every_credit_opens_a_grant_of_its_kind(user, make_staff):
    staff = make_staff("staff@example.com")
    payment = purchase(user, 5, days=365)
    ledger.adjust_credits(user, 2, reason="goodwill", actor=staff)
    ledger.grant_credits(user, 3, reason="welcome")
    opened = {g.source: g for g in CreditGrant.objects.filter(profile__user=user)}
    assert (opened["purchase"].category, opened["purchase"].amount, opened["purchase"].payment) == (PAID, 5, payment)
    assert opened["purchase"].expires_at > timezone.now() + timedelta(days=364)
    assert (opened["adjustment"].category, opened["adjustment"].expires_at) == (PAID, None)
    assert (opened["grant"].category, opened["grant"].remaining) == (PROMOTIONAL, 3)
    assert ledger.get_balance(user) == 10
    assert_books_sound()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"category": "gold"}, "category must be one of"),
        ({"expires_at": timezone.now() - timedelta(seconds=1)}, "must lie in the future"),
        ({"expires_at": "2030-01-01"}, "timezone-aware datetime"),
    ],
)
def test_a_grant_that_cannot_be_honoured_is_refused(user, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ledger.grant_credits(user, 1, reason="bad", **kwargs)
    assert not CreditGrant.objects.exists() and not LedgerEntry.objects.exists()


def test_a_repeated_grant_key_grants_once(user):
    first = ledger.grant_credits(user, 3, reason="welcome", idempotency_key="welcome:1")
    again = ledger.grant_credits(user, 3, reason="welcome", idempotency_key="welcome:1")
    assert again.pk == first.pk
    assert CreditGrant.objects.count() == 1 and ledger.get_balance(user) == 3


# --- the drawdown order ----------------------------------------------------------------------


def test_spends_draw_soonest_expiry_first_then_promotional_then_oldest(user):
    soon = timezone.now() + timedelta(days=5)
    later = timezone.now() + timedelta(days=10)
    made = {
        "later promo": grant(user, 1, at=later),
        "later paid": grant(user, 1, category=PAID, at=later),
        "soon paid": grant(user, 1, category=PAID, at=soon),
        "soon promo": grant(user, 1, at=soon),
        "never paid": grant(user, 1, category=PAID),
        "never promo": grant(user, 1),
        "soon promo, newer": grant(user, 1, at=soon),
    }
    names = {g.pk: name for name, g in made.items()}
    order = [names[draws(ledger.spend_credits(user, 1, reason="one"))[0][0]] for _ in made]
    assert order == [
        "soon promo",
        "soon promo, newer",
        "soon paid",
        "later promo",
        "later paid",
        "never promo",
        "never paid",
    ]
    with pytest.raises(InsufficientCredits):
        ledger.spend_credits(user, 1, reason="nothing left")
    assert_books_sound()


def test_a_spend_across_grants_records_each_draw(user):
    first = grant(user, 2, days=1)
    second = grant(user, 3, category=PAID)
    entry = ledger.spend_credits(user, 4, reason="big")
    assert draws(entry) == [(first.pk, 2), (second.pk, 2)]
    assert [g.remaining for g in CreditGrant.objects.order_by("id")] == [0, 1]
    assert_books_sound()


def test_a_refused_spend_draws_nothing(user):
    grant(user, 2)
    with pytest.raises(InsufficientCredits):
        ledger.spend_credits(user, 3, reason="too much")
    assert CreditGrant.objects.get().remaining == 2 and not GrantAllocation.objects.exists()


def test_python_and_sql_agree_on_the_drawdown_order(user):
    # The one definition (grants.DRAWDOWN_ORDER) and what a spend really draws (billing_spend on
    # PostgreSQL, grants.draw elsewhere) pick the same grants, on a mix of ties.
    now = timezone.now()
    expiries = [None, now + timedelta(days=1), now + timedelta(days=2)]
    for n in range(12):
        grant(user, 1, category=(PAID, PROMOTIONAL)[n % 2], at=expiries[n % 3])
    profile_id = user.profile.pk
    expected = list(grants.open_grants("default", profile_id, now).values_list("id", flat=True))
    drawn = [draws(ledger.spend_credits(user, 1, reason="one"))[0][0] for _ in expected]
    assert drawn == expected


# --- expiry ----------------------------------------------------------------------------------


def test_credits_stop_being_spendable_the_moment_they_expire_without_a_sweep(user, client):
    expires_at = timezone.now() + timedelta(seconds=1)
    grant(user, 2, at=expires_at)
    grant(user, 1, category=PAID)
    assert ledger.get_balance(user, now=expires_at - timedelta(microseconds=1)) == 3
    assert ledger.get_balance(user, now=expires_at) == 1
    wait_for(lambda: timezone.now() > expires_at, timeout=5, message="the grant's expiry")
    # No sweep has run: the ledger still holds the expired credits, but nobody can see or spend them.
    assert not LedgerEntry.objects.filter(kind=Kind.EXPIRY).exists()
    assert ledger.get_balance(user) == 1
    client.force_login(user)
    assert client.get("/api/current_user").json()["credits"] == 1
    with pytest.raises(InsufficientCredits) as refused:
        ledger.spend_credits(user, 2, reason="too late")
    assert refused.value.balance == 1
    entry = ledger.spend_credits(user, 1, reason="what is left")
    paid = CreditGrant.objects.get(category=PAID)
    assert draws(entry) == [(paid.pk, 1)]
    expired = LedgerEntry.objects.get(kind=Kind.EXPIRY)  # the spend swept first, once
    assert (expired.delta, expired.reason) == (-2, "2 promotional credits expired")
    assert_books_sound()


def test_expire_credits_writes_each_expiry_once(user, other_user):
    at = timezone.now() + timedelta(days=3)
    grant(user, 2, at=at)
    grant(user, 5, category=PAID)
    grant(other_user, 4, at=at + timedelta(hours=1))
    assert ledger.expire_credits(now=at - timedelta(seconds=1)) == 0
    assert ledger.expire_credits(now=at) == 2
    assert ledger.expire_credits(now=at) == 0
    assert ledger.expire_credits(now=at + timedelta(days=1)) == 4
    assert ledger.expire_credits(now=at + timedelta(days=2)) == 0
    assert list(LedgerEntry.objects.filter(kind=Kind.EXPIRY).order_by("id").values_list("delta", flat=True)) == [-2, -4]
    user.profile.refresh_from_db()
    assert (user.profile.credits, user.profile.next_expiry) == (5, None)
    assert ledger.get_balance(other_user) == 0


def test_the_next_expiry_hint_follows_the_soonest_open_grant(user):
    later = grant(user, 1, days=20).expires_at
    sooner = grant(user, 1, days=10).expires_at
    user.profile.refresh_from_db()
    assert user.profile.next_expiry == sooner
    ledger.expire_credits(now=sooner)
    user.profile.refresh_from_db()
    assert user.profile.next_expiry == later


def test_expired_credits_signal_after_commit(user, django_capture_on_commit_callbacks):
    from billing import signals

    heard = []

    def receiver(sender, user, credits, entry, grant, **kwargs):
        heard.append((user.pk, credits, entry.kind, grant.pk))

    signals.credits_expired.connect(receiver)
    try:
        opened = grant(user, 3, days=1)
        with django_capture_on_commit_callbacks(execute=True):
            ledger.expire_credits(now=opened.expires_at)
    finally:
        signals.credits_expired.disconnect(receiver)
    assert heard == [(user.pk, 3, Kind.EXPIRY, opened.pk)]


def test_a_sweep_in_batches_writes_what_one_profile_at_a_time_would(
    make_user, monkeypatch, django_capture_on_commit_callbacks
):
    """Profiles are swept a batch per transaction; batches smaller than the work, profiles with
    several expired grants, and one whose hint is due but has nothing expired (a stale hint)."""
    from billing import signals
    from billing.ledger import operations

    monkeypatch.setattr(operations, "EXPIRY_BATCH", 2)
    at = timezone.now() + timedelta(days=3)
    users = [make_user() for _ in range(5)]
    opened = {}
    for n, someone in enumerate(users):
        ledger.add_credits(someone, 10, kind=Kind.PURCHASE, reason="bought")
        opened[someone.pk] = [grant(someone, 1 + n, at=at), grant(someone, 2, at=at + timedelta(hours=1))]
        grant(someone, 7, days=30)
    ledger.spend_credits(users[0], 3, reason="used before expiry")  # drawn from its soonest grant
    stale = make_user()
    ledger.add_credits(stale, 4, kind=Kind.PURCHASE, reason="bought")
    type(stale.profile).objects.filter(pk=stale.profile.pk).update(next_expiry=at)
    heard = []

    def receiver(sender, user, credits, entry, grant, **kwargs):
        heard.append((user.pk, credits, grant.pk))

    signals.credits_expired.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            total = ledger.expire_credits(now=at + timedelta(hours=2))
    finally:
        signals.credits_expired.disconnect(receiver)

    # users[0]: its first grant (1) was spent and 2 more came from the next one; the rest expire.
    expected = {users[0].pk: [(opened[users[0].pk][1].pk, 0)]}
    for n, someone in enumerate(users[1:], start=1):
        expected[someone.pk] = [(opened[someone.pk][0].pk, 1 + n), (opened[someone.pk][1].pk, 2)]
    swept = [(pk, credits, grant_id) for pk, rows in expected.items() for grant_id, credits in rows if credits]
    assert sorted(heard) == sorted(swept)
    assert total == sum(credits for _, credits, _ in swept)
    entries = LedgerEntry.objects.filter(kind=Kind.EXPIRY)
    assert entries.count() == len(swept)
    for entry in entries:
        assert [amount for _, amount in draws(entry)] == [-entry.delta]
    for someone in users:
        someone.profile.refresh_from_db()
        assert someone.profile.next_expiry == someone.profile.grants.get(amount=7).expires_at  # 30 days
    stale.profile.refresh_from_db()
    assert stale.profile.next_expiry == stale.profile.grants.get().expires_at  # the purchase's year
    assert [ledger.get_balance(someone) for someone in users] == [10 + 7] * 5
    assert ledger.get_balance(stale) == 4
    assert ledger.expire_credits(now=at + timedelta(hours=2)) == 0
    assert_books_sound()


# --- clawbacks and reinstatements ------------------------------------------------------------


def test_a_clawback_takes_from_the_payments_own_grant_first(user):
    payment = purchase(user, 5)
    promo = grant(user, 3, days=5)  # the drawdown order would take these first
    entry, shortfall = ledger.claw_back_credits(user, 4, kind=Kind.REFUND, reason="refund", payment=payment)
    own = CreditGrant.objects.get(payment=payment)
    assert (draws(entry), shortfall) == ([(own.pk, 4)], 0)
    promo.refresh_from_db()
    assert promo.remaining == 3
    assert_books_sound()


def test_a_clawback_of_spent_credits_takes_what_is_left_in_drawdown_order(user):
    payment = purchase(user, 5)
    promo = grant(user, 3, days=5)
    ledger.spend_credits(user, 7, reason="most of it")  # promo 3, then 4 of the purchase
    entry, shortfall = ledger.claw_back_credits(user, 5, kind=Kind.REFUND, reason="refund", payment=payment)
    own = CreditGrant.objects.get(payment=payment)
    assert (draws(entry), shortfall) == ([(own.pk, 1)], 4)
    promo.refresh_from_db()
    assert (promo.remaining, ledger.get_balance(user)) == (0, 0)
    assert_books_sound()


def test_a_reinstatement_refills_the_grant_it_came_from_keeping_its_expiry(user):
    payment = purchase(user, 5, days=30)
    own = CreditGrant.objects.get(payment=payment)
    ledger.claw_back_credits(user, 5, kind=Kind.DISPUTE, reason="dispute", payment=payment)
    entry = ledger.reinstate_credits(user, 3, payment=payment, reason="dispute won", idempotency_key="won:1")
    again = ledger.reinstate_credits(user, 3, payment=payment, reason="dispute won", idempotency_key="won:1")
    assert again.pk == entry.pk
    own.refresh_from_db()
    assert (own.remaining, draws(entry)) == (3, [(own.pk, 3)])
    assert ledger.get_balance(user) == 3
    user.profile.refresh_from_db()
    assert user.profile.next_expiry == own.expires_at
    assert_books_sound()


def test_credits_taken_before_grants_existed_come_back_as_a_paid_grant(user):
    # A clawback from before the migration drew on no grant: what it took comes back new.
    payment = purchase(user, 5)
    ledger.spend_credits(user, 5, reason="all")
    entry = ledger.reinstate_credits(user, 2, payment=payment, reason="refund failed", idempotency_key="back:1")
    assert (entry.opened_grant.amount, entry.opened_grant.category, entry.opened_grant.expires_at) == (2, PAID, None)
    assert_books_sound()


def test_a_refund_through_fulfilment_claws_back_from_its_own_grant(user):
    from billing import fulfilment

    payment = purchase(user, 5)
    Payment.objects.filter(pk=payment.pk).update(stripe_payment_intent_id="pi_own")
    grant(user, 3, days=5)
    fulfilment.record_refund(Payment.objects.get(pk=payment.pk), amount_refunded=500)
    assert CreditGrant.objects.get(payment=payment).remaining == 0
    assert ledger.get_balance(user) == 3
    assert_books_sound()


# --- audit_credits finds each kind of corruption ---------------------------------------------


def raw(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.fixture
def books(user):
    payment = purchase(user, 5)
    promo = grant(user, 3, days=5)
    spend = ledger.spend_credits(user, 4, reason="some")
    assert_books_sound()
    return {"payment": payment, "promo": promo, "spend": spend}


def test_audit_finds_a_grant_changed_behind_the_ledgers_back(books):
    raw("UPDATE billing_creditgrant SET remaining = remaining + 1 WHERE id = %s", [books["promo"].pk - 1])
    problems = [problem for _, problem in grant_problems()]
    assert any("but its grants hold" in p for p in problems)
    assert any("but its history leaves" in p for p in problems)
    with pytest.raises(CommandError, match="grant or hold problem"):
        call_command("audit_credits")


def test_audit_finds_a_missing_allocation(books):
    raw("DELETE FROM billing_grantallocation WHERE entry_id = %s", [books["spend"].pk])
    problems = [problem for _, problem in grant_problems()]
    assert any(f"entry {books['spend'].pk} (spend -4) moves 0 credits" in p for p in problems)


def test_audit_finds_a_draw_after_expiry(books):
    drawn_at = books["spend"].created_at
    raw(
        "UPDATE billing_creditgrant SET expires_at = %s WHERE id = %s",
        [drawn_at - timedelta(seconds=1), books["promo"].pk],
    )
    problems = [problem for _, problem in grant_problems()]
    assert any(f"drew 3 from grant {books['promo'].pk} after it expired" in p for p in problems)


def test_audit_finds_a_hint_that_would_let_expired_credits_be_spent(user):
    grant(user, 3, days=5)
    raw("UPDATE billing_profile SET next_expiry = NULL WHERE user_id = %s", [user.pk])
    assert any("next expiry hint none" in problem for _, problem in grant_problems())


def test_audit_is_clean_and_says_so(books, capsys):
    call_command("audit_credits")
    assert "every balance matches its ledger and its grants" in capsys.readouterr().out


# --- pages see the spendable balance -----------------------------------------------------------


def test_the_billing_page_never_shows_expired_credits(user, client):
    expires_at = timezone.now() + timedelta(seconds=1)
    grant(user, 2, at=expires_at)
    client.force_login(user)
    wait_for(lambda: timezone.now() > expires_at, timeout=5, message="the grant's expiry")
    response = client.get("/billing/")
    assert response.status_code == HTTPStatus.OK
    assert response.context["balance"] == 0


def test_a_purchase_is_valid_for_the_days_its_pack_promised_when_bought(user):
    from billing import fulfilment

    pack = CreditPack.objects.create(slug="yearly", name="Yearly", credits=10, amount=900, validity_days=365)
    payment = Payment.objects.create(
        user=user, pack=pack, credits=10, amount=900, currency="usd", validity_days=pack.validity_days
    )
    CreditPack.objects.filter(pk=pack.pk).update(validity_days=1)  # a later edit of the pack changes nothing
    before = timezone.now()
    fulfilment.fulfil_payment(payment, intent_id="pi_yearly", amount=900, currency="usd", source="test")
    bought = CreditGrant.objects.get(payment=payment)
    assert (bought.category, bought.amount) == (PAID, 10)
    assert before + timedelta(days=365) <= bought.expires_at <= timezone.now() + timedelta(days=365)
    assert_books_sound()


def test_clawbacks_and_reinstatements_are_described_in_the_customers_words(user):
    from billing import fulfilment

    payment = purchase(user, 5)
    Payment.objects.filter(pk=payment.pk).update(stripe_payment_intent_id="pi_words")
    payment = Payment.objects.get(pk=payment.pk)
    fulfilment.record_dispute(payment, amount_disputed=500)
    fulfilment.record_dispute_reinstated(Payment.objects.get(pk=payment.pk), amount_disputed=500)
    day = timezone.localtime(payment.created_at)
    bought = f"Starter bought {day.day} {day:%b %Y}"
    reasons = list(LedgerEntry.objects.filter(payment=payment).order_by("id").values_list("kind", "reason"))
    assert reasons[1:] == [
        ("dispute", f"Dispute of {bought}"),
        ("reinstatement", f"Dispute won: credits of {bought} given back"),
    ]
    assert all(f"payment {payment.pk}" not in reason.lower() for _, reason in reasons)  # no internal id
