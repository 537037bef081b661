"""The runner: each scenario in its own process, then the report.

    python -m reliability --full    # `make reliability`: every scenario at full size, rewrites docs/RELIABILITY.md
    python -m reliability --smoke   # `make reliability-smoke`: the process scenarios at CI size, prints a summary

PostgreSQL comes from RELIABILITY_DATABASE_URL or DATABASE_URL (its server; the scenarios use
their own rel_* databases there), else postgres://postgres@127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from reliability import report
from reliability.harness import ROOT, database_url, log, machine, server_version

SCENARIOS = [
    ("storm", "reliability.storm"),
    ("two_servers", "reliability.two_servers"),
    ("faults", "reliability.faults"),
    ("worker_kill", "reliability.worker_kill"),
]
# The pytest parts of the suite, run on PostgreSQL (the full run only; `make test` runs them in CI).
PYTEST_GROUPS = {
    "hostile_input": [
        "tests/test_fuzz_charge.py",
        "tests/test_fuzz_webhook.py",
        "tests/test_fuzz_commands.py",
        "tests/test_fuzz_regressions.py",
    ],
    "security": [
        "tests/test_security_access.py",
        "tests/test_security_headers.py",
        "tests/test_security_secrets.py",
        "tests/test_security_ratelimit.py",
        "tests/test_settings.py",
    ],
    "append_only": ["tests/test_append_only.py", "tests/test_reliability_faults.py"],
}
SCENARIO_TIMEOUT = 1800  # seconds; every scenario is bounded


def run_scenario(module: str, size: str, out: Path) -> dict:
    started = time.monotonic()
    cmd = [sys.executable, "-m", module, "--size", size, "--json", str(out)]
    log(f"--> {' '.join(cmd[1:])}")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, timeout=SCENARIO_TIMEOUT)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    if out.exists():
        result = json.loads(out.read_text())
    else:
        result = {"passed": False, "error": f"{module} ended ({code}) without a result"}
    result["exit_code"] = code
    result.setdefault("seconds", round(time.monotonic() - started, 1))
    result["passed"] = bool(result.get("passed")) and code == 0
    return result


def run_pytest(name: str, paths: list[str], tmp: Path, *, full: bool) -> dict:
    junit = tmp / f"{name}.xml"
    fuzz_report = tmp / f"{name}-fuzz.json"
    env = {
        **os.environ,
        "DATABASE_URL": database_url("rel_pytest"),
        "RELIABILITY_FUZZ": "full" if full else "",
        "RELIABILITY_FUZZ_REPORT": str(fuzz_report),
    }
    cmd = [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider", "--create-db", f"--junitxml={junit}"]
    log(f"--> pytest {' '.join(paths)}")
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=SCENARIO_TIMEOUT)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    result = {"paths": paths, "exit_code": code, "seconds": round(time.monotonic() - started, 1)}
    if junit.exists():
        suite = ET.parse(junit).getroot()  # noqa: S314 - pytest's own report, written by us just now
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        result.update(counts)
        result["passed_tests"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        per_file: dict[str, int] = {}
        for case in suite.iter("testcase"):
            if case.find("skipped") is None:
                module = (case.get("classname") or "").split(".")[1] if "." in (case.get("classname") or "") else "?"
                per_file[module] = per_file.get(module, 0) + 1
        result["per_file"] = per_file
        result["failed_names"] = [
            f"{case.get('classname')}::{case.get('name')}"
            for case in suite.iter("testcase")
            if case.find("failure") is not None or case.find("error") is not None
        ][:20]
    if fuzz_report.exists():
        result["fuzz"] = json.loads(fuzz_report.read_text())
    result["passed"] = code == 0 and result.get("failures", 1) == 0 and result.get("errors", 1) == 0
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="full sizes; rewrites docs/RELIABILITY.md")
    size.add_argument("--smoke", action="store_true", help="CI sizes (the default); prints a summary")
    parser.add_argument("--only", help="comma-separated scenario names, for a partial run (never writes the doc)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/RELIABILITY.md")
    args = parser.parse_args()
    full = bool(args.full)
    size = "full" if full else "smoke"
    only = set(args.only.split(",")) if args.only else None
    started_at = datetime.now(UTC)
    started = time.monotonic()
    pg_version = server_version()
    facts = machine(pg_version)
    tmp = Path(tempfile.mkdtemp(prefix="reliability_"))
    results: dict[str, dict] = {}
    for name, module in SCENARIOS:
        if only is None or name in only:
            results[name] = run_scenario(module, size, tmp / f"{name}.json")
    if full:
        for name, paths in PYTEST_GROUPS.items():
            if only is None or name in only:
                results[name] = run_pytest(name, paths, tmp, full=True)
    total = time.monotonic() - started
    passed = all(r["passed"] for r in results.values())
    command = "make reliability" if full else "make reliability-smoke"
    invocation = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, "-m", "reliability", *sys.argv[1:]])
    print(report.summary(results, total_seconds=total), flush=True)
    if full and only is None and not args.no_doc:
        text = report.document(
            results,
            command=command,
            invocation=invocation,
            machine=facts,
            started_at=started_at,
            total_seconds=total,
        )
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "RELIABILITY.md").write_text(text)
        log("docs/RELIABILITY.md rewritten")
    log(f"{'ALL PASSED' if passed else 'SOME FAILED'} in {total:.0f} s (details: {tmp})")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
