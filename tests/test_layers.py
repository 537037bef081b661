"""billing's modules import only downwards, as docs/DESIGN.md ("Where things are") maps them.

Reads each module's imports with `ast` (no import side effects) and fails on an import of a
billing module that the module's layer may not use, so the map and the code cannot drift apart."""

import ast
from pathlib import Path

import pytest

BILLING = Path(__file__).resolve().parent.parent / "billing"

FOUNDATIONS = {"conf", "exceptions", "signals", "users", "decline_messages", "priorities", "templatetags.billing_money"}
CORE = FOUNDATIONS | {"models", "ledger", "stripe_gateway"}
SERVICES = CORE | {"fulfilment", "charges", "cards", "refunds", "reconcile", "abandoned", "webhooks"}
READS = {"conf", "models", "selectors", "pages", "ratelimit"}

# module (or package) -> the billing modules it may import; None: anything (the outer layers).
ALLOWED = {
    "conf": set(),
    "exceptions": set(),
    "signals": set(),
    "users": set(),
    "priorities": set(),
    "decline_messages": set(),
    "templatetags.billing_money": set(),
    "models": {"conf", "exceptions", "decline_messages", "templatetags.billing_money"},
    "ledger": {"conf", "exceptions", "models", "signals", "ledger"},
    "stripe_gateway": {"conf", "exceptions", "decline_messages"},
    "fulfilment": CORE,
    "charges": CORE | {"fulfilment"},
    "cards": CORE | {"fulfilment", "charges"},
    "autorecharge": CORE | {"fulfilment", "charges", "cards"},
    "refunds": CORE | {"fulfilment"},
    "reconcile": CORE | {"fulfilment"},
    "abandoned": CORE | {"fulfilment"},
    "webhooks": CORE | {"fulfilment", "notices", "priorities"},
    "notices": {"conf", "exceptions", "models", "priorities", "stripe_gateway", "templatetags.billing_money"},
    "selectors": {"conf", "models"},
    "pages": {"conf", "models"},
    "ratelimit": {"conf", "models"},
    "http": SERVICES | READS,
}


def billing_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "billing":
            if node.module == "billing":
                found |= {alias.name for alias in node.names}
            else:
                found.add(node.module.removeprefix("billing."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("billing.") for a in node.names if a.name.startswith("billing.")}
    return found


def layer_of(name: str) -> str | None:
    """The ALLOWED key a module or package member belongs to (the longest matching prefix)."""
    matches = [key for key in ALLOWED if name == key or name.startswith(key + ".")]
    return max(matches, key=len) if matches else None


def modules():
    for path in sorted(BILLING.rglob("*.py")):
        relative = path.relative_to(BILLING).with_suffix("")
        if relative.parts[0] in ("migrations", "locale"):
            continue
        name = ".".join(part for part in relative.parts if part != "__init__")
        if name:
            yield name, path


@pytest.mark.parametrize(("name", "path"), list(modules()), ids=lambda value: getattr(value, "name", value))
def test_imports_only_what_its_layer_allows(name, path):
    layer = layer_of(name)
    if layer is None:
        return  # the HTTP layer, start-up and commands may import anything in billing
    allowed = ALLOWED[layer]
    refused = {
        imported
        for imported in billing_imports(path)
        if (layer_of(imported) or imported) not in allowed and layer_of(imported) != layer
    }
    assert not refused, f"billing.{name} imports {sorted(refused)}; docs/DESIGN.md allows {sorted(allowed)}"


def test_every_layer_named_here_exists():
    names = {name for name, _ in modules()}
    assert all(any(n == key or n.startswith(key + ".") for n in names) for key in ALLOWED)
