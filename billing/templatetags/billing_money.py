from django import template

register = template.Library()

_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£"}
# Currencies Stripe counts in whole units (no minor unit).
_ZERO_DECIMAL = {
    "bif",
    "clp",
    "djf",
    "gnf",
    "jpy",
    "kmf",
    "krw",
    "mga",
    "pyg",
    "rwf",
    "ugx",
    "vnd",
    "vuv",
    "xaf",
    "xof",
    "xpf",
}


def decimals(currency: str) -> int:
    """Digits after the point in the currency's written amounts: 2 for "usd" (cents), 0 for "jpy"."""
    return 0 if (currency or "").lower() in _ZERO_DECIMAL else 2


@register.filter
def money(amount, currency):
    """Integer minor units as text, e.g. 500, "usd" -> "$5.00"; never through a float."""
    currency = (currency or "").lower()
    amount = int(amount)
    if currency in _ZERO_DECIMAL:
        text = f"{amount:,}"
    else:
        whole, cents = divmod(abs(amount), 100)
        text = f"{'-' if amount < 0 else ''}{whole:,}.{cents:02d}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"
