"""Prove docs/INSTALL.md on a clean machine: the billing wheel in a project made by `startproject`.

    python scripts/stock_project_check.py        (make stock-check; CI runs it)

1. Builds the wheel (`python -m build --wheel`) and checks its file list: billing's code,
   templates, static files, migrations and commands, and nothing of the project around it.
2. Creates a fresh virtualenv and installs the wheel there (its dependencies from the package
   index) plus the project's database driver; `django-admin startproject` in a temporary directory.
3. Adds only what docs/INSTALL.md says (INSTALLED_APPS, TASKS, URLs, the three Stripe keys, the site URL,
   STRIPE_API_BASE pointing at a localstripe this script starts), a sign-in page and one tiny
   paid view using `@credits_required(1)`; Django's default `auth.User`.
4. Migrates on PostgreSQL (DATABASE_URL's server, database STOCK_CHECK_DB, default `stock_check`,
   dropped and re-created), runs `manage.py check`, `billing_periodic` and a worker that runs
   what it enqueued (`db_worker --batch`), starts runserver on a free loopback port, and
   over HTTP (session cookie, CSRF) signs in, opens /billing/, buys the starter pack through
   POST /billing/charge/ with a PaymentMethod made at localstripe, and spends a credit.

Cleans up after itself (processes, temporary directory, database) and ends with PASS or FAIL.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import localstripe_server  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# The project's own choice of driver, as a project would pin it (billing does not depend on one).
DRIVER = next(
    line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines() if "psycopg" in line
)
PASSWORD = "stock-check-passphrase-123"  # noqa: S105  (a throwaway user in a throwaway database)

WHEEL_MUST_HAVE = [
    "billing/__init__.py",
    "billing/conf.py",
    "billing/checks.py",
    "billing/urls.py",
    "billing/urls_emaily.py",
    "billing/signals.py",
    "billing/templatetags/billing.py",
    "billing/templates/billing/base.html",
    "billing/templates/billing/standalone.html",
    "billing/templates/billing/index.html",
    "billing/templates/billing/insufficient_credits.html",
    "billing/static/billing/billing.js",
    "billing/static/billing/billing.css",
    "billing/migrations/0001_initial.py",
    "billing/management/commands/adjust_credits.py",
    "billing/management/commands/reconcile_payments.py",
    "billing/management/commands/billing_periodic.py",
    "billing/tasks.py",
]
UNFINISHED_TASKS = (
    "from django_tasks_db.models import DBTaskResult; print(DBTaskResult.objects.exclude(status='SUCCESSFUL').count())"
)
WHEEL_MUST_NOT = (
    "core/",
    "accounts/",
    "tests/",
    "bench/",
    "reliability/",
    "scripts/",
    "testbed/",
    "templates/",
    "static/",
)


class CheckFailed(Exception):
    pass


def step(text: str) -> None:
    print(f"--> {text}", flush=True)


def run(cmd, *, cwd=None, env=None, timeout=180) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise CheckFailed(f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


# --- 1. the wheel ------------------------------------------------------------------------------


def build_wheel(out: Path) -> Path:
    step("building the wheel")
    build_dir = out / "build-src"
    # Build from a copy, so the repository gets no build/ or egg-info left behind.
    shutil.copytree(
        ROOT,
        build_dir,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "__pycache__", "*.pyc", "staticfiles", "db.sqlite3", "build", "*.egg-info"
        ),
    )
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out / "dist"), str(build_dir)], timeout=300)
    wheels = list((out / "dist").glob("*.whl"))
    if len(wheels) != 1:
        raise CheckFailed(f"expected one wheel, found {wheels}")
    return wheels[0]


def check_wheel_files(wheel: Path) -> None:
    step(f"checking the file list of {wheel.name}")
    names = zipfile.ZipFile(wheel).namelist()
    missing = [name for name in WHEEL_MUST_HAVE if name not in names]
    stray = [name for name in names if name.startswith(WHEEL_MUST_NOT)]
    outside = [name for name in names if not name.startswith("billing/") and ".dist-info/" not in name]
    if missing or stray or outside:
        raise CheckFailed(f"wheel content: missing {missing}, project files {stray}, outside billing/ {outside}")
    if not any(name.endswith("LICENSE") for name in names):
        raise CheckFailed("the wheel carries no LICENSE")


# --- 2. a fresh virtualenv and a stock project ----------------------------------------------


def make_venv(out: Path, wheel: Path) -> Path:
    step("creating a fresh virtualenv and installing the wheel (dependencies from the package index)")
    venv = out / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel), DRIVER], timeout=300
    )
    return python


def start_project(out: Path, python: Path, *, stripe_base: str, database: dict) -> Path:
    step("django-admin startproject, then only what docs/INSTALL.md says")
    project = out / "stockproject"
    project.mkdir()
    run([str(python.parent / "django-admin"), "startproject", "stock", str(project)])
    settings = project / "stock" / "settings.py"
    settings.write_text(
        settings.read_text()
        + textwrap.dedent(
            f"""

            # --- docs/INSTALL.md ---
            INSTALLED_APPS += ["django_tasks", "django_tasks_db", "billing"]
            TASKS = {{"default": {{"BACKEND": "django_tasks_db.DatabaseBackend"}}}}
            STRIPE_SECRET_KEY = "sk_test_stock_check"
            STRIPE_PUBLISHABLE_KEY = "pk_test_stock_check"
            STRIPE_WEBHOOK_SECRET = "whsec_stock_check"
            STRIPE_API_BASE = {stripe_base!r}  # localstripe, started by scripts/stock_project_check.py
            BILLING_SITE_URL = "http://127.0.0.1:8000"

            # --- the stock project's own choices ---
            DATABASES = {{"default": {database!r}}}
            LOGIN_URL = "/accounts/login/"
            LOGIN_REDIRECT_URL = "/billing/"
            """
        )
    )
    (project / "stock" / "views.py").write_text(
        textwrap.dedent(
            """
            from django.http import HttpResponse

            from billing.decorators import credits_required


            @credits_required(1, reason="Stock project paid view")
            def paid(request):
                return HttpResponse("paid content")
            """
        )
    )
    urls = project / "stock" / "urls.py"
    urls.write_text(
        urls.read_text().replace("from django.urls import path", "from django.urls import include, path")
        + textwrap.dedent(
            """
            from django.contrib.auth import views as auth_views

            from stock import views

            urlpatterns += [
                # docs/INSTALL.md
                path("billing/", include("billing.urls")),
                path("api/", include("billing.urls_emaily")),
                # the stock project's own pages: a sign-in page (Django ships no template for it) and a paid view
                path("accounts/login/", auth_views.LoginView.as_view(template_name="admin/login.html")),
                path("paid/", views.paid),
            ]
            """
        )
    )
    return project


# --- PostgreSQL ------------------------------------------------------------------------------


def database_settings() -> tuple[dict, str]:
    url = urllib.parse.urlsplit(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    if url.scheme not in ("postgres", "postgresql"):
        raise CheckFailed(f"DATABASE_URL must name a PostgreSQL server, got {url.scheme}://")
    name = os.environ.get("STOCK_CHECK_DB", "stock_check")
    settings = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": urllib.parse.unquote(url.username or "postgres"),
        "PASSWORD": urllib.parse.unquote(url.password or ""),
        "HOST": url.hostname or "127.0.0.1",
        "PORT": str(url.port or 5432),
    }
    return settings, name


def recreate_database(settings: dict, *, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(
        dbname="postgres",
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        host=settings["HOST"],
        port=settings["PORT"],
        autocommit=True,
    ) as conn:
        name = psycopg.sql.Identifier(settings["NAME"])
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        if not drop_only:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(name))


# --- 4. over HTTP ----------------------------------------------------------------------------


class Browser:
    """A real HTTP client with a cookie jar: session cookie and CSRF as a browser has them."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, method: str, path: str, *, data=None, json_body=None, headers=None):
        headers = dict(headers or {})
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            body = urllib.parse.urlencode(data).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if method == "POST":
            headers.setdefault("X-CSRFToken", self.cookie("csrftoken") or "")
            headers.setdefault("Referer", self.base + path)
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=30) as response:
                return response.status, response.read().decode(), response.geturl()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), exc.geturl()

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"the server exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise CheckFailed(f"{url} did not answer within {timeout} s")


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)
    print(f"    ok: {what}", flush=True)


def buy_and_spend(site: str, stripe_base: str) -> None:
    browser = Browser(site)
    step("signing in (Django's auth.User, username and password)")
    status, body, _ = browser.request("GET", "/accounts/login/")
    expect(status == 200 and browser.cookie("csrftoken"), "the sign-in page sets a CSRF cookie")
    status, body, url = browser.request(
        "POST",
        "/accounts/login/",
        data={"username": "buyer", "password": PASSWORD, "csrfmiddlewaretoken": browser.cookie("csrftoken")},
    )
    expect(browser.cookie("sessionid") is not None, f"signed in (session cookie set; ended at {url}, {status})")

    step("GET /billing/ from the installed app")
    status, page, _ = browser.request("GET", "/billing/")
    expect(status == 200, f"/billing/ renders ({status})")
    expect("billing-standalone" in page, "billing's own layout is used (the stock project has no base.html)")
    expect('data-buy-pack="starter"' in page and "add-credits-dialog" in page, "the starter pack and the dialog show")
    expect(re.search(r'id="header-credits-value">0<', page) is not None, "the header shows Credits: 0")
    script = re.search(r'<script src="([^"]*billing/billing\.js)"', page)
    expect(script is not None and browser.request("GET", script.group(1))[0] == 200, "billing.js is served")

    step("making a PaymentMethod at localstripe, POST /billing/charge/")
    form = urllib.parse.urlencode(
        {
            "type": "card",
            "card[number]": "4242424242424242",
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": "123",
        }
    ).encode()
    req = urllib.request.Request(
        f"{stripe_base}/v1/payment_methods", data=form, headers={"Authorization": "Bearer sk_test_stock_check"}
    )
    with urllib.request.urlopen(req, timeout=10) as response:
        payment_method = json.load(response)["id"]
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    status, body, _ = browser.request(
        "POST",
        "/billing/charge/",
        json_body={"pack": "starter", "payment_method": payment_method},
        headers={"X-CSRFToken": csrf, "Accept": "application/json"},
    )
    answer = json.loads(body) if body.startswith("{") else {}
    expect(status == 200 and answer.get("status") == "succeeded", f"the charge succeeded ({status} {body[:200]})")
    expect(answer.get("credits") == 5 and answer.get("added") == 5, "5 credits added, balance 5")

    step("spending a credit through @credits_required on the stock project's own view")
    status, body, _ = browser.request("GET", "/paid/")
    expect(status == 200 and body == "paid content", f"the paid view answered ({status})")
    status, body, _ = browser.request("GET", "/api/current_user")
    user = json.loads(body)
    expect(status == 200 and user.get("credits") == 4, f"the balance is 4 after the spend ({body})")
    expect(user.get("email") == "buyer@example.com", "the API names the user by email (auth.User)")
    status, page, _ = browser.request("GET", "/billing/")
    expect('id="balance-value">4<' in page and "Stock project paid view" in page, "/billing/ shows the spend")


# --- the whole path --------------------------------------------------------------------------


def main() -> int:
    started = time.monotonic()
    os.chdir(ROOT)  # localstripe_server.start() runs `python -m scripts.localstripe_server`
    database, _ = database_settings()
    out = Path(tempfile.mkdtemp(prefix="stock-check-"))
    processes: list[subprocess.Popen] = []
    created_database = False
    try:
        wheel = build_wheel(out)
        check_wheel_files(wheel)
        python = make_venv(out, wheel)
        stripe_proc, stripe_base = localstripe_server.start()
        processes.append(stripe_proc)
        project = start_project(out, python, stripe_base=stripe_base, database=database)
        env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "DATABASE_URL")}
        env["DJANGO_SETTINGS_MODULE"] = "stock.settings"
        manage = [str(python), "manage.py"]

        step(f"PostgreSQL: database {database['NAME']} on {database['HOST']}:{database['PORT']}, migrate")
        recreate_database(database)
        created_database = True
        run([*manage, "migrate", "--no-input", "-v", "0"], cwd=project, env=env)
        step("manage.py check")
        print(textwrap.indent(run([*manage, "check", "--fail-level", "WARNING"], cwd=project, env=env).strip(), "    "))
        step("manage.py billing_periodic, then the worker runs what it enqueued (db_worker --batch)")
        print(textwrap.indent(run([*manage, "billing_periodic"], cwd=project, env=env).strip(), "    "))
        run([*manage, "db_worker", "--batch", "--no-reload", "--no-startup-delay"], cwd=project, env=env)
        left = run([*manage, "shell", "-v", "0", "-c", UNFINISHED_TASKS], cwd=project, env=env).strip()
        if left != "0":
            raise CheckFailed(f"the worker left {left} task(s) unfinished or failed")
        run(
            [
                *manage,
                "shell",
                "-c",
                f"from django.contrib.auth.models import User; "
                f"User.objects.create_user('buyer', 'buyer@example.com', {PASSWORD!r})",
            ],
            cwd=project,
            env=env,
        )

        port = localstripe_server.free_port()
        step(f"runserver on 127.0.0.1:{port}")
        server = subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(server)
        site = f"http://127.0.0.1:{port}"
        wait_for(f"{site}/accounts/login/", server)
        buy_and_spend(site, stripe_base)
    except CheckFailed as exc:
        print(f"\nFAIL: stock project check ({time.monotonic() - started:.0f} s)\n{exc}", flush=True)
        return 1
    except Exception:
        traceback.print_exc()
        print(f"\nFAIL: stock project check ({time.monotonic() - started:.0f} s)", flush=True)
        return 1
    finally:
        for proc in reversed(processes):
            localstripe_server.stop(proc)
        if created_database:
            recreate_database(database, drop_only=True)
        shutil.rmtree(out, ignore_errors=True)
    print(f"\nPASS: stock project check ({time.monotonic() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
