"""docs/BENCHMARKS.md from one run's results: machine, sizes, every figure as median (min–max)
over the runs, each ratio against its baseline from the same run, the targets, and the chart."""

from __future__ import annotations

from pathlib import Path

from bench import report_ledger
from bench.stats import Figure, fmt, fmt_figure

ROOT = Path(__file__).resolve().parent.parent
NOTES = Path(__file__).resolve().parent / "NOTES.md"
CHART_NAME = "bench-ledger-throughput.svg"
TRIVIAL_PATHS = ("/billing/", "/api/current_user")
ADMIN_LIST_MS = 500
AUDIT_MS = 30_000
SHOW_CREDITS_MS = 100
# Twice what the synchronous endpoint credited (196 events/s) before webhooks were acknowledged first.
CREDITED_PER_SECOND = 392
GROWTH_LIMIT = 1.5  # "does not grow with the ledger": big / small median latency


# --- targets --------------------------------------------------------------------------------


def targets(report: dict) -> list[tuple[str, str, str, bool | None]]:
    """(what, target, measured, met) for every target of the issue that this run measured."""
    rows = []
    ledger = report["parts"].get("ledger")
    if ledger:
        rows += report_ledger.targets(ledger)
    webhook = report["parts"].get("webhook")
    if webhook:
        figure = webhook["ratios"]["duplicate"]
        rows.append(("webhook duplicates vs trivial view", "≥ 0.5x", fmt_figure(figure), figure.median >= 0.5))
        figure = webhook["ratios"]["new"]
        rows.append(
            ("webhook new events acknowledged vs trivial view", "≥ 0.4x", fmt_figure(figure), figure.median >= 0.4)
        )  # noqa: E501
        figure = webhook.get("credited")
        if figure is not None:
            rows.append(
                (
                    "webhook new events credited end to end",
                    f"≥ {CREDITED_PER_SECOND} events/s",
                    fmt_figure(figure),
                    figure.median >= CREDITED_PER_SECOND,
                )
            )
    charge = report["parts"].get("charge")
    if charge:
        figure = charge["overhead"]
        rows.append(("charge overhead beyond Stripe, p50", "< 10 ms", fmt_figure(figure), figure.median < 10))
    scale = report["parts"].get("scale")
    if scale:
        for path in TRIVIAL_PATHS:
            few, many = scale["queries"].get((path, "small")), scale["queries"].get((path, "big"))
            if few is not None and many is not None:
                # Constant, whatever the ledger's size (the page's own budget is a contract test:
                # tests/test_query_counts.py).
                rows.append((f"GET {path} queries, small → big ledger", "constant", f"{few} → {many}", few == many))
            small, big = scale["pages"].get((path, "small")), scale["pages"].get((path, "big"))
            if small and big:
                growth = big.median / small.median
                rows.append(
                    (
                        f"GET {path} latency, 1M vs 10k entries",
                        f"≤ {GROWTH_LIMIT}x",
                        f"{growth:.2f}x ({fmt(small.median, 'ms')} → {fmt(big.median, 'ms')})",
                        growth <= GROWTH_LIMIT,
                    )
                )
        for (path, label), figure in scale["pages"].items():
            if label == "big" and path.startswith("/admin/"):
                rows.append(
                    (f"admin GET {path}", f"< {ADMIN_LIST_MS} ms", fmt_figure(figure), figure.median < ADMIN_LIST_MS)
                )
        audit = scale["commands"].get(("audit_credits", "big"))
        if audit:
            rows.append(
                (
                    "audit_credits (ledger and grant checks) over the big ledger",
                    "< 30 s",
                    fmt_figure(audit),
                    audit.median < AUDIT_MS,
                )
            )
        show = scale["commands"].get(("show_credits", "big"))
        if show:
            rows.append(
                ("show_credits", f"instant (< {SHOW_CREDITS_MS} ms)", fmt_figure(show), show.median < SHOW_CREDITS_MS)
            )
    return rows


def missed_targets(report: dict) -> list[str]:
    return [f"{what}: {measured} (target {goal})" for what, goal, measured, met in targets(report) if met is False]


# --- the document ---------------------------------------------------------------------------


def write(report: dict, out: Path) -> list[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    ledger = report["parts"].get("ledger")
    chart = out.parent / CHART_NAME
    if ledger:
        chart.write_text(report_ledger.chart(ledger))
        written.append(chart)
    out.write_text(_document(report, chart.name if ledger else None))
    written.insert(0, out)
    return written


def _document(report: dict, chart: str | None) -> str:
    kind = "smoke run (tiny counts: checks the harness, not the figures)" if report["smoke"] else "full run"
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{'make bench-smoke' if report['smoke'] else 'make bench'}` ({kind}) on "
        f"{report['started']}, in {report.get('seconds', 0):.0f} s. Every figure is the median over the runs, "
        "with the spread (slowest–fastest run) in brackets; each ratio is taken within a run, against the "
        "baseline measured in that same run, then summarised the same way. Re-run with `make bench` "
        "(about 10 minutes); the harness is in `bench/` (see `python -m bench --help`).",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in report["machine"].items()],
        f"| Load average at end | {report.get('load_at_end', 'n/a')} |",
        "",
        "The machine is shared: other work may run beside the bench, which is why every comparison "
        "is interleaved with its baseline and reported as a ratio within each run.",
        "",
    ]
    if report["errors"]:
        lines += ["## Parts that failed", ""]
        for part, error in report["errors"].items():
            lines += [f"- **{part}**: `{error.strip().splitlines()[-1]}`"]
        lines += [""]
    rows = targets(report)
    if rows:
        lines += ["## Targets", "", "| What | Target | Measured | Met |", "| --- | --- | --- | --- |"]
        lines += [f"| {w} | {g} | {m} | {'yes' if ok else 'NO'} |" for w, g, m, ok in rows]
        lines += [""]
        if any(ok is False for *_, ok in rows) and NOTES.exists():
            lines += [
                'Targets marked NO are explained, with what was changed and measured, in "What was changed '
                'for these figures, and what limits them" at the end.',
                "",
            ]
    if "ledger" in report["parts"]:
        lines += report_ledger.section(report["parts"]["ledger"], chart)
    if "webhook" in report["parts"]:
        lines += _webhook_section(report["parts"]["webhook"])
    if "charge" in report["parts"]:
        lines += _charge_section(report["parts"]["charge"])
    if "scale" in report["parts"]:
        lines += _scale_section(report["parts"]["scale"])
    if NOTES.exists():
        lines += [NOTES.read_text().strip(), ""]
    return "\n".join(lines) + "\n"


def _webhook_section(webhook: dict) -> list[str]:
    from bench import webhook_bench

    lines = [
        "## 2. Webhook endpoint through gunicorn (4 workers)",
        "",
        webhook_bench.__doc__.split("\n\n", 1)[1].strip(),
        "",
        "The load generator runs 2 processes x 4 threads on the same machine (8 requests in flight), "
        "each request on a new connection, as gunicorn's sync workers close them.",
        "",
        "| Requests | Throughput | p50 | p99 | vs trivial view |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind in webhook_bench.KINDS:
        ratio = webhook["ratios"].get(kind)
        lines.append(
            f"| {kind} | {fmt_figure(webhook['throughput'][kind])} | {fmt_figure(webhook['p50'][kind])} | "
            f"{fmt_figure(webhook['p99'][kind])} | {fmt_figure(ratio) if ratio else 'baseline'} |"
        )
    credited = webhook.get("credited")
    if credited is not None:
        ratio = webhook["ratios"].get("credited")
        lines.append(f"| credited (end to end) | {fmt_figure(credited)} | | | {fmt_figure(ratio) if ratio else ''} |")
    return [*lines, ""]


def _charge_section(charge: dict) -> list[str]:
    from bench import charge_bench

    return [
        "## 3. Charge endpoint against localstripe",
        "",
        charge_bench.__doc__.split("\n\n", 1)[1].strip(),
        "",
        "| | p50 | p99 |",
        "| --- | --- | --- |",
        f"| POST /billing/charge/ (end to end) | {fmt_figure(charge['p50']['charge'])} "
        f"| {fmt_figure(charge['p99']['charge'])} |",
        f"| Stripe round trip alone | {fmt_figure(charge['p50']['stripe'])} | {fmt_figure(charge['p99']['stripe'])} |",
        f"| **Our overhead** (charge − Stripe) | **{fmt_figure(charge['overhead'])}** "
        f"| p90: {fmt_figure(charge['overhead_p90'])} |",
        f"| charge / Stripe | {fmt_figure(charge['ratio'])} | |",
        "",
    ]


def _scale_section(scale: dict) -> list[str]:
    from bench import scale_bench

    sizes = scale["sizes"]
    fill = scale["fill"]
    lines = [
        "## 4. Scale: a million ledger entries",
        "",
        scale_bench.__doc__.split("\n\n", 1)[1].strip(),
        "",
        f"- Small: {sizes['small']['ledger entries']:,} ledger entries, {sizes['small']['users']:,} users.",
        f"- Big: {sizes['big']['ledger entries']:,} ledger entries, {sizes['big']['users']:,} users "
        f"({fill.get('big_entries', 0):,} generated by one `INSERT ... SELECT` over `generate_series` in "
        f"{fill.get('big_insert', 0):.1f} s, {fill.get('big', 0):.1f} s with the VACUUM ANALYZE after it; "
        "`DJANGO_SETTINGS_MODULE=bench.settings python manage.py bench_fill_ledger` does the same on its own).",
        "",
        "Server time per request (median of each run's requests), and SQL queries per request:",
        "",
        "| Page | small ledger | big ledger | big / small | queries (small → big) |",
        "| --- | --- | --- | --- | --- |",
    ]
    paths = list(dict.fromkeys(path for path, _ in scale["pages"]))
    for path in paths:
        small, big = scale["pages"].get((path, "small")), scale["pages"].get((path, "big"))
        growth = f"{big.median / small.median:.2f}x" if small and big else ""
        queries = f"{scale['queries'].get((path, 'small'), '?')} → {scale['queries'].get((path, 'big'), '?')}"
        lines.append(
            f"| `{path}` | {fmt_figure(small) if small else ''} | {fmt_figure(big) if big else ''} "
            f"| {growth} | {queries} |"
        )
    lines += ["", "| Command | small ledger | big ledger |", "| --- | --- | --- |"]
    for name, note in (
        ("audit_credits", "`manage.py audit_credits`"),
        ("show_credits", "`manage.py show_credits EMAIL`"),
        ("ledger scan", "baseline: `SELECT count(*), sum(delta)` over the whole ledger"),
    ):
        small, big = scale["commands"].get((name, "small")), scale["commands"].get((name, "big"))
        lines.append(f"| {note} | {fmt_figure(small) if small else ''} | {fmt_figure(big) if big else ''} |")
    audit, scan = scale["commands"].get(("audit_credits", "big")), scale["commands"].get(("ledger scan", "big"))
    if audit and scan:
        lines += ["", f"audit_credits takes {audit.median / scan.median:.1f}x one bare scan of the big ledger."]
    return [*lines, ""]


# --- raw results ----------------------------------------------------------------------------


def to_json(report: dict) -> dict:
    def convert(value):
        if isinstance(value, Figure):
            return value.as_dict()
        if isinstance(value, dict):
            return {_key(k): convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value

    def _key(key):
        if isinstance(key, tuple):
            return " | ".join(getattr(k, "label", str(k)) for k in key)
        return str(key)

    return convert(report)
