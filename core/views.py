from http import HTTPStatus

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_http_methods

from billing.decorators import credits_required
from billing.ledger import get_balance
from billing.metering import metered_view

# Ledger entries that mean the user has bought or used credits before: they are "back".
RETURNING_KINDS = ["purchase", "spend", "capture"]
# The last fortune bought, kept in the session so a reload shows it again without charging (the
# POST answers with a redirect to the page, which reads it from here).
LAST_FORTUNE = "last_fortune"
LAST_LONG_FORTUNE = "last_long_fortune"


def home(request):
    context = {}
    if request.user.is_authenticated:
        context = {
            "balance": get_balance(request.user),
            "returning": request.user.profile.ledger_entries.filter(kind__in=RETURNING_KINDS).exists(),
        }
    return render(request, "home.html", context)


def favicon(request):
    """Browsers ask for /favicon.ico whatever the page says: send them to the site's icon."""
    return redirect(static("favicon.svg"), permanent=True)


@login_required
@require_http_methods(["GET", "POST"])
def fortune(request):
    """The example paid action's page: what it costs, the button that spends a credit (home has the
    same button, posting here), and the last fortune bought."""
    if request.method == "POST":
        return _tell_fortune(request)
    context = {"cost": 1, "balance": get_balance(request.user), "last": request.session.get(LAST_FORTUNE)}
    return render(request, "fortune.html", context)


FORTUNES = [
    "A well-kept ledger is a quiet mind.",
    "Exactly once is better than at least once.",
    "Your next deploy will be boring, in the best way.",
    "Integers never round against you.",
    "The invariant holds.",
]


@credits_required(1, reason="Fortune told")
def _tell_fortune(request):
    # Paid views capture a hold ("capture" entries); "spend" ones are fortunes told before holds.
    spent_so_far = request.user.profile.ledger_entries.filter(kind__in=["spend", "capture"]).count()
    fortune = FORTUNES[spent_so_far % len(FORTUNES)]
    request.session[LAST_FORTUNE] = {"text": fortune, "spent": 1, "left": get_balance(request.user)}
    return redirect("fortune")


# The metered example: like an AI answer, its cost is known only once it is written.
LONG_FORTUNE_MAX_SENTENCES = 3  # 1 credit a sentence: at most this many credits are held


class OracleUnavailable(Exception):
    """The fortune could not be written (in a real project: the AI API failed or timed out)."""


@login_required
@require_http_methods(["GET", "POST"])
def long_fortune(request):
    """The metered example action's page: up to 3 credits, 1 for each sentence the fortune has."""
    if request.method == "POST":
        return _tell_long_fortune(request)
    context = {"up_to": LONG_FORTUNE_MAX_SENTENCES, "last": request.session.get(LAST_LONG_FORTUNE)}
    return render(request, "long_fortune.html", context)


def compose_long_fortune(told_before: int) -> list[str]:
    """The fortune's sentences: one to three, a different length each time it is told."""
    length = told_before % LONG_FORTUNE_MAX_SENTENCES + 1
    return [FORTUNES[(told_before + n) % len(FORTUNES)] for n in range(length)]


@metered_view(LONG_FORTUNE_MAX_SENTENCES, reason="Long fortune told")
def _tell_long_fortune(request):
    told_before = request.user.profile.ledger_entries.filter(kind="capture", reason="Long fortune told").count()
    try:
        sentences = compose_long_fortune(told_before)
    except OracleUnavailable:
        # An answer of 400 or more releases the hold: a failed fortune costs nothing.
        return render(
            request,
            "long_fortune.html",
            {"up_to": LONG_FORTUNE_MAX_SENTENCES, "failed": True},
            status=HTTPStatus.SERVICE_UNAVAILABLE,
        )
    request.meter.charge(len(sentences))
    # What will be left once the hold is captured: what is available now, plus what is held and not used.
    left = get_balance(request.user) + LONG_FORTUNE_MAX_SENTENCES - len(sentences)
    request.session[LAST_LONG_FORTUNE] = {"text": " ".join(sentences), "spent": len(sentences), "left": left}
    return redirect("long_fortune")
