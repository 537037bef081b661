"""What the data migrations create, put back where a test needs it after a flush.

A transactional test (live server, real concurrency) ends with a flush that also removes the
rows data migrations made, so the next such test starts without them.
"""

from billing.models import CreditPack

# As billing's data migration creates it.
STARTER = {"name": "Starter", "credits": 5, "amount": 500, "currency": "usd"}


def starter_pack() -> CreditPack:
    """The `starter` pack, created again if a flush removed it."""
    pack, _ = CreditPack.objects.get_or_create(slug="starter", defaults=STARTER)
    return pack
