"""Reading settings from the environment (twelve-factor), failing loudly in production."""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool | None) -> bool | None:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_required(name: str, *, debug: bool, dev_default: str) -> str:
    """A secret: taken from the environment; only a development run may fall back to a default."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if debug:
        return dev_default
    raise ImproperlyConfigured(f"{name} must be set in the environment when DEBUG is off")


def read_dotenv(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of a `.env` file: blank lines and `# comments` skipped, an optional
    `export ` prefix, values optionally in single or double quotes (kept as written inside), and an
    unquoted value's ` # comment` dropped. A line of another shape is an error naming its number."""
    values = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        name, equals, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name.isidentifier():
            raise ImproperlyConfigured(f"{path}, line {number}: expected KEY=VALUE, got {raw!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif value and value[0] in "\"'":
            raise ImproperlyConfigured(f"{path}, line {number}: the quote of {name}'s value is not closed")
        else:
            value = value.split(" #", 1)[0].rstrip()
        values[name] = value
    return values


def load_dotenv(default_path: Path) -> Path | None:
    """Development convenience: put a `.env` file's values into the environment, where the variables
    already set win. DOTENV_PATH names another file; set to an empty string, it turns this off
    (tests and other throwaway runs do, so a developer's `.env` never leaks into them)."""
    chosen = os.environ.get("DOTENV_PATH")
    if chosen is not None and not chosen.strip():
        return None
    path = Path(chosen) if chosen else default_path
    if not path.is_file():
        return None
    for name, value in read_dotenv(path).items():
        os.environ.setdefault(name, value)
    return path
