"""docs/BENCHMARKS.md from one run's results: machine, sizes, every figure as median (min–max)
over the runs, each ratio against its baseline from the same run, the targets, and the chart."""

from __future__ import annotations

from pathlib import Path

from bench import report_ledger
from bench.chart import Bar, bar_chart, stack
from bench.stats import Figure, fmt, fmt_figure

ROOT = Path(__file__).resolve().parent.parent
CHART_NAME = "bench-ledger-throughput.svg"
TRIVIAL_PATHS = ("/billing/", "/api/current_user")
ADMIN_LIST_MS = 500
AUDIT_MS = 60_000
EXPIRE_MS = 30_000
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
                        f"GET {path} latency, {_size(scale, 'big')} vs {_size(scale, 'small')} entries",
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
                    f"audit_credits (ledger and grant checks) over {_size(scale, 'big')} entries",
                    f"< {AUDIT_MS // 1000} s",
                    fmt_figure(audit),
                    audit.median < AUDIT_MS,
                )
            )
        expiry = scale.get("expiry")
        if expiry:
            rows.append(
                (
                    f"expire_credits over {expiry['grants']:,} expired grants (distinct profiles)",
                    f"< {EXPIRE_MS // 1000} s",
                    fmt_figure(expiry["figure"]),
                    expiry["figure"].median < EXPIRE_MS,
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
    chart = out.parent / CHART_NAME
    svg = _chart(report)
    if svg:
        chart.write_text(svg)
        written.append(chart)
    out.write_text(_document(report, chart.name if svg else None))
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
        "(about 15 minutes, a quarter of it generating ten million ledger entries); "
        "the harness is in `bench/` (see `python -m bench --help`).",
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
        if any(ok is False for *_, ok in rows):
            lines += [
                'Targets marked NO are explained in "What was changed for these figures, and what limits them" '
                "at the end.",
                "",
            ]
    if "ledger" in report["parts"]:
        lines += report_ledger.section(report["parts"]["ledger"], chart)
    if "webhook" in report["parts"]:
        lines += _webhook_section(report["parts"]["webhook"])
        if chart and "ledger" not in report["parts"]:
            lines += [f"![Webhook throughput]({chart})", ""]
    if "charge" in report["parts"]:
        lines += _charge_section(report["parts"]["charge"])
    if "scale" in report["parts"]:
        lines += _scale_section(report["parts"]["scale"])
    lines += _changes_section(rows)
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
        f"## 4. Scale: {_size_words(sizes['big']['ledger entries'])} ledger entries",
        "",
        scale_bench.__doc__.split("\n\n", 1)[1].strip(),
        "",
        f"- Small: {sizes['small']['ledger entries']:,} ledger entries, {sizes['small']['users']:,} users.",
        f"- Big: {sizes['big']['ledger entries']:,} ledger entries, {sizes['big']['users']:,} users "
        f"({fill.get('big_entries', 0):,} generated by `INSERT ... SELECT` over `generate_series`, a million rows "
        f"a statement, in {fill.get('big_insert', 0):.1f} s, {fill.get('big', 0):.1f} s with the VACUUM ANALYZE "
        "after it; "
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
    expiry = scale.get("expiry")
    if expiry:
        lines += [
            "",
            f"`expire_credits` (what `manage.py expire_credits` runs) over {expiry['grants']:,} expired grants, "
            "one on each of "
            f"{expiry['grants']:,} profiles of the big ledger (a fresh set each run): "
            f"**{fmt_figure(expiry['figure'])}**, one `expiry` entry per grant; the ledger and grant checks "
            f"of `audit_credits` then found {'nothing' if expiry.get('audit_clean') else 'PROBLEMS'} "
            f"({fmt(expiry.get('audit_ms', 0), 'ms')}).",
        ]
    return [*lines, ""]


def _size(scale: dict, label: str) -> str:
    """A ledger's size in short words: 10k, 1M, 10M."""
    rows = scale.get("sizes", {}).get(label, {}).get("ledger entries", 0)
    for unit, name in ((1_000_000, "M"), (1_000, "k")):
        if rows >= unit:
            return f"{rows / unit:.3g}{name}"
    return str(rows)


def _size_words(rows: int) -> str:
    words = {10_000_000: "ten million", 1_000_000: "a million"}
    for size, name in words.items():
        if rows >= size * 0.98:
            return name
    return f"{rows:,}"


# --- the chart ------------------------------------------------------------------------------

# The webhook bench's rates, in the order the chart shows them; a rate it reports under another
# name is shown after these, and one it does not report is left out.
WEBHOOK_RATES = {
    "new acknowledged": "#1f6feb",
    "credited end to end": "#0b4fa8",
    "new": "#1f6feb",
    "duplicate": "#2da44e",
    "trivial": "#d1242f",
}
# Other names the webhook part may give the same rates.
WEBHOOK_ALIASES = {"credited": "credited end to end", "acknowledged": "new acknowledged"}


def _chart(report: dict) -> str | None:
    """docs/bench-ledger-throughput.svg: the ledger's throughput against processes, and under it
    the webhook endpoint's throughput (whichever of the two parts ran)."""
    panels = []
    ledger = report["parts"].get("ledger")
    if ledger:
        panels.append(report_ledger.chart(ledger))
    webhook = report["parts"].get("webhook")
    rates = _webhook_rates(webhook) if webhook else {}
    if rates:
        bars = [
            Bar(label, WEBHOOK_RATES.get(label, "#8250df"), figure.median, figure.low, figure.high)
            for label, figure in rates.items()
        ]
        panels.append(
            bar_chart(
                "Webhook endpoint through gunicorn (4 workers): throughput",
                "requests (events) per second",
                bars,
                note="signed payment_intent.succeeded events; trivial: a view that does nothing",
            )
        )
    if not panels:
        return None
    return panels[0] if len(panels) == 1 else stack(panels)


def _webhook_rates(webhook: dict) -> dict[str, Figure]:
    """Every rate (a Figure per second) the webhook part reported, by name, in WEBHOOK_RATES' order:
    from its `throughput` table, and any other table or figure of rates beside it."""
    found: dict[str, Figure] = {}

    def take(name, value):
        if isinstance(value, Figure) and value.unit.endswith("/s"):
            name = str(name).replace("_", " ")
            found.setdefault(WEBHOOK_ALIASES.get(name, name), value)

    for name, value in (webhook.get("throughput") or {}).items():
        take(name, value)
    for key, value in webhook.items():
        if key in ("throughput", "p50", "p99", "ratios"):
            continue
        if isinstance(value, dict):
            for name, figure in value.items():
                take(name, figure)
        else:
            take(key, value)
    if "credited end to end" in found and "new" in found and "new acknowledged" not in found:
        # New events credited by the task workers after the answer: the endpoint's own rate is
        # how fast it acknowledges them.
        found["new acknowledged"] = found.pop("new")
    order = list(WEBHOOK_RATES)
    return dict(sorted(found.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


# --- what was changed -----------------------------------------------------------------------

# Why targets read as they do: (title, the starts of their names in the Targets table, why). The
# history of each change, with before/after figures, is in bench/NOTES.md.
EXPLANATIONS = (
    (
        "Ledger throughput",
        ("ledger",),
        "a credit is one statement and a debit one call of a PL/pgSQL function, each prepared once per connection; "
        "a spend reads only the grants it draws from (bench/NOTES.md sections 1, 6 and 7).",
    ),
    (
        "Holds",
        ("hold+capture",),
        "a hold and its capture are two operations, each committed on its own (that is what lets a slow paid action "
        "run without a lock): two round trips and two commits against a spend's one; bench/NOTES.md section 8 has "
        "the time inside the functions.",
    ),
    (
        "Webhook endpoint",
        ("webhook",),
        "a new event or a redelivery is one prepared statement (the store, the duplicate check and the task lease "
        "together, billing/webhooks/queue.py), answered before any crediting; task workers credit stored events 25 "
        "per transaction, each payment in one statement, ahead of emails, a batch's receipts in one task "
        "(bench/NOTES.md sections 10 and 12; before: the whole fulfilment in the request, 0.08-0.10x and "
        "188-196 events/s).",
    ),
    (
        "Charge endpoint",
        ("charge overhead",),
        "6 statements around the Stripe call (14 before), then the receipt's task enqueued: the Payment "
        "committed before Stripe is called, then the payment marked succeeded and credited in one statement "
        "whose result answers the balance (bench/NOTES.md section 9).",
    ),
    (
        "Admin pages over the big ledger",
        ("admin GET",),
        "a changelist's count comes from billing/admin/paginator.py: on a PostgreSQL table its statistics call "
        'large, the planner\'s estimate (shown as "about N") when many rows match, else an exact count (under a '
        "150 ms timeout when the planner expects it to scan); each page reads its rows by index.",
    ),
    (
        "/billing/ and /api/current_user",
        ("GET /billing/", "GET /api/current_user"),
        "none of their queries reads more of the ledger as it grows (tests/test_query_counts.py holds the budgets).",
    ),
    (
        "audit_credits",
        ("audit_credits",),
        "one set-based pass per check (billing/ledger/invariants.py): its time follows one scan of the ledger, "
        "never one query per user.",
    ),
    (
        "expire_credits",
        ("expire_credits",),
        "profiles are swept a thousand per transaction, their rows locked in id order, and on PostgreSQL each "
        "batch is one statement (billing/ledger/postgresql.py, expire_postgresql).",
    ),
)


def _changes_section(rows: list) -> list[str]:
    """A short pointer to bench/NOTES.md, then why this run's targets read as they do: one line
    per group of targets with an explanation, and one per missed target without one."""
    lines = [
        "## What was changed for these figures, and what limits them",
        "",
        "What was changed for each target over time, with before/after figures and profiles, is in "
        "[bench/NOTES.md](../bench/NOTES.md). For this run:",
        "",
    ]
    explained = set()
    for title, starts, why in EXPLANATIONS:
        matched = [row for row in rows if row[0].startswith(starts)]
        if not matched:
            continue
        explained.update(row[0] for row in matched)
        missed = [f"{what}: {measured}" for what, _, measured, met in matched if met is False]
        verdict = f"{len(missed)} of {len(matched)} NOT met ({'; '.join(missed)})" if missed else "met"
        counted = f"{len(matched)} target{'s' if len(matched) != 1 else ''}"
        lines.append(f"- **{title}** ({counted}, {verdict}): {why}")
    for what, goal, measured, met in rows:
        if met is False and what not in explained:
            lines.append(f"- **{what}**: {measured}, target {goal}, NOT met; bench/NOTES.md has what limits it.")
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
