from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from billing.decorators import credits_required
from billing.ledger import get_balance


def home(request):
    return render(request, "home.html")


@login_required
@require_http_methods(["GET", "POST"])
def fortune(request):
    """The example paid action's page: what it costs, and the button that spends a credit."""
    if request.method == "POST":
        return _tell_fortune(request)
    return render(request, "fortune.html", {"cost": 1})


FORTUNES = [
    "A well-kept ledger is a quiet mind.",
    "Exactly once is better than at least once.",
    "Your next deploy will be boring, in the best way.",
    "Integers never round against you.",
    "The invariant holds.",
]


@credits_required(1, reason="Fortune told")
def _tell_fortune(request):
    spent_so_far = request.user.profile.ledger_entries.filter(kind="spend").count()
    fortune = FORTUNES[spent_so_far % len(FORTUNES)]
    messages.success(request, f"Your fortune: {fortune} (1 credit spent, {get_balance(request.user)} left)")
    return redirect("fortune")
