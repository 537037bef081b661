"""`make run`: set up the database and run the development site on its embedded defaults."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    env = {**os.environ, "DEBUG": os.environ.get("DEBUG", "1")}
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], check=True, env=env, cwd=ROOT)
    port = os.environ.get("PORT", "8000")
    return subprocess.call([*manage, "runserver", f"127.0.0.1:{port}"], env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
