"""The ledger part of docs/BENCHMARKS.md: its targets, its tables and its chart (bench.report
writes the document around them; bench.ledger_throughput measures)."""

from __future__ import annotations

from bench.chart import Series, line_chart
from bench.stats import fmt_figure

MANY_GRANTS_LIMIT = 1.5  # a spend on a profile with 100 open grants against one with 3
HOLD_CAPTURE_GOAL = 0.5  # hold+capture within twice the cost of one spend: at least half its ops/s
# A hold serialises nothing beyond its profile: spread over many profiles, hold+capture gains from
# more processes about as much as spends do (its scaling over theirs).
HOLD_SCALING_GOAL = 0.8


def _ledger_goal(config, impl: str) -> float | None:
    """The ratio to the single-balance baseline each measured configuration must reach, if any."""
    if impl == "app":
        if config.procs == 1:
            return 1.0
        if config.procs == 8 and config.target == "hot":
            return 0.8
    if impl == "app_3_grants":
        if config.procs == 1:
            return 1.2
        if config.procs == 8 and config.target == "hot":
            return 1.0
    return None


def targets(ledger: dict) -> list[tuple[str, str, str, bool | None]]:
    """(what, target, measured, met) for every ledger target this run measured."""
    rows = []
    for (config, impl), figure in sorted(ledger["ratios"].items(), key=lambda kv: config_key(kv[0][0])):
        goal = _ledger_goal(config, impl)
        if goal is None:
            continue
        what = "ledger" if impl == "app" else "ledger, 3 open grants,"
        rows.append(
            (
                f"{what} {config.op}, {config.target}, {config.procs} proc vs baseline",
                f"≥ {goal}x",
                fmt_figure(figure),
                figure.median >= goal,
            )
        )
    for config, figure in sorted(ledger.get("many_grants", {}).items(), key=lambda kv: config_key(kv[0])):
        rows.append(
            (
                f"ledger {config.op}, {config.target}, {config.procs} proc: 100 open grants vs 3",
                f"≥ {1 / MANY_GRANTS_LIMIT:.2f}x (within {MANY_GRANTS_LIMIT}x)",
                fmt_figure(figure),
                figure.median * MANY_GRANTS_LIMIT >= 1,
            )
        )
    for config, figure in sorted(ledger.get("holds", {}).items(), key=lambda kv: config_key(kv[0])):
        rows.append(
            (
                f"hold+capture vs one spend, 3 open grants, {config.target}, {config.procs} proc",
                f"≥ {HOLD_CAPTURE_GOAL}x (within {1 / HOLD_CAPTURE_GOAL:g}x the cost)",
                fmt_figure(figure),
                figure.median >= HOLD_CAPTURE_GOAL,
            )
        )
    figure = ledger.get("holds_scaling", {}).get(("spread", "ratio"))
    if figure:
        rows.append(
            (
                f"hold+capture scaling vs spends' ({figure.name.split(': ', 1)[1]})",
                f"≥ {HOLD_SCALING_GOAL}x",
                fmt_figure(figure),
                figure.median >= HOLD_SCALING_GOAL,
            )
        )
    return rows


def config_key(config) -> tuple:
    return ({"spend": 0, "add": 1}[config.op], {"spread": 0, "hot": 1}[config.target], config.procs)


def section(ledger: dict, chart: str | None) -> list[str]:
    from bench import ledger_throughput

    lines = [
        "## 1. Ledger throughput (PostgreSQL)",
        "",
        ledger_throughput.__doc__.split("\n\n", 1)[1].strip(),
        "",
        "Operations per second, all processes together (app: profiles holding one open grant):",
        "",
        "| Operation | Profiles | Procs | app | baseline | app / baseline | baseline_prepared / baseline "
        "| orm_naive / baseline |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    configs = sorted({config for config, _ in ledger["throughput"]}, key=config_key)
    for config in configs:
        cells = [config.op, _profiles(config), str(config.procs)]
        for impl in ("app", "baseline"):
            cells.append(fmt_figure(ledger["throughput"][(config, impl)]))
        for impl in ("app", "baseline_prepared", "orm_naive"):
            figure = ledger["ratios"].get((config, impl))
            cells.append(
                f"**{fmt_figure(figure)}**" if figure and impl == "app" else fmt_figure(figure) if figure else ""
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""]
    grant_configs = [config for config in configs if (config, "app_3_grants") in ledger["throughput"]]
    if grant_configs:
        lines += [
            "Grant-aware spends, beside the single-balance figures of the same runs: `spend_credits` on "
            "profiles holding 3 and 100 open grants, against the same single-balance baseline, and 100 "
            "open grants against 3 (ops/s):",
            "",
            "| Profiles | Procs | app, 1 grant | app, 3 grants | app, 100 grants | baseline "
            "| 3 grants / baseline | 100 grants / baseline | 100 grants / 3 grants |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for config in grant_configs:
            cells = [_profiles(config), str(config.procs)]
            for impl in ("app", "app_3_grants", "app_100_grants", "baseline"):
                figure = ledger["throughput"].get((config, impl))
                cells.append(fmt_figure(figure) if figure else "")
            for impl in ("app_3_grants", "app_100_grants"):
                figure = ledger["ratios"].get((config, impl))
                cells.append(f"**{fmt_figure(figure)}**" if figure else "")
            figure = ledger.get("many_grants", {}).get(config)
            cells.append(f"**{fmt_figure(figure)}**" if figure else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines += [""]
    lines += _holds_lines(ledger, configs)
    if chart:
        lines += [f"![Ledger throughput against the number of processes]({chart})", ""]
    return lines


def _profiles(config) -> str:
    return "1,000 (spread)" if config.target == "spread" else "1 (hot)"


def _holds_lines(ledger: dict, configs: list) -> list[str]:
    hold_configs = [config for config in configs if (config, "hold_capture") in ledger["throughput"]]
    if not hold_configs:
        return []
    lines = [
        "Holds: `hold_credits` then `capture_hold` (one operation) against one `spend_credits`, both on "
        "profiles holding 3 open grants, in the same runs (ops/s):",
        "",
        "| Profiles | Procs | spend | hold+capture | hold+capture / spend |",
        "| --- | --- | --- | --- | --- |",
    ]
    for config in hold_configs:
        cells = [_profiles(config), str(config.procs)]
        for impl in ("app_3_grants", "hold_capture"):
            cells.append(fmt_figure(ledger["throughput"][(config, impl)]))
        figure = ledger.get("holds", {}).get(config)
        cells.append(f"**{fmt_figure(figure)}**" if figure else "")
        lines.append("| " + " | ".join(cells) + " |")
    scaling = ledger.get("holds_scaling", {})
    if scaling:
        lines += [
            "",
            "Scaling from the fewest to the most processes, within each run: a hold that serialised writers "
            "beyond its own profile would scale worse than spends over 1,000 profiles.",
            "",
            "| Profiles | Processes | spends | hold+capture | hold+capture / spends |",
            "| --- | --- | --- | --- | --- |",
        ]
        for target in ("spread", "hot"):
            figures = [scaling.get((target, what)) for what in ("spend", "hold_capture", "ratio")]
            if all(figures):
                span = figures[0].name.split(": ", 1)[1].rsplit(", ", 1)[0]
                profiles = "1,000 (spread)" if target == "spread" else "1 (hot)"
                spend, holds, ratio = (fmt_figure(figure) for figure in figures)
                lines.append(f"| {profiles} | {span} | {spend} | {holds} | **{ratio}** |")
    return [*lines, ""]


def chart(ledger: dict) -> str:
    colours = {"app": "#1f6feb", "app_3_grants": "#2da44e", "hold_capture": "#8250df", "baseline": "#d1242f"}
    names = {"app": "app", "app_3_grants": "app, 3 grants", "hold_capture": "hold+capture", "baseline": "baseline"}
    series = []
    for target in ("spread", "hot"):
        for impl in colours:
            points = []
            for (config, name), figure in ledger["throughput"].items():
                if config.op == "spend" and config.target == target and name == impl:
                    points.append((config.procs, figure.median, figure.low, figure.high))
            if points:
                label = f"{names[impl]}, {'1,000 profiles' if target == 'spread' else 'one hot profile'}"
                series.append(Series(label, colours[impl], target == "hot", sorted(points)))
    return line_chart(
        "Ledger: spend_credits (one grant, 3 open grants) vs hand-written psycopg",
        "concurrent processes",
        "operations per second",
        series,
    )
