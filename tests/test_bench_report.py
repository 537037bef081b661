"""The bench report's chart and its "what was changed" section, from hand-made results (no
database): the webhook panel reads whichever rates the webhook part reported, under the names it
has now or the ones it may add, and the chart stays one well-formed SVG."""

import xml.etree.ElementTree as ET

from bench import report
from bench.stats import Figure


def rate(name, *runs):
    figure = Figure(name, "req/s")
    for value in runs:
        figure.add(value)
    return figure


def webhook_part(**extra):
    kinds = {"new": rate("new", 60, 70), "duplicate": rate("duplicate", 200, 220), "trivial": rate("trivial", 300)}
    p50 = {kind: Figure(f"{kind} p50", "ms", [5.0]) for kind in kinds}
    p99 = {kind: Figure(f"{kind} p99", "ms", [9.0]) for kind in kinds}
    ratios = {kind: Figure(f"{kind}/trivial", "x", [0.5]) for kind in ("new", "duplicate")}
    return {"throughput": kinds, "p50": p50, "p99": p99, "ratios": ratios, **extra}


def labels(svg: str) -> list[str]:
    tree = ET.fromstring(svg)  # noqa: S314 - the bench's own SVG; parsing it proves it well-formed
    return [t.text for t in tree.iter("{http://www.w3.org/2000/svg}text")]


def test_the_webhook_panel_shows_new_duplicate_and_trivial():
    svg = report._chart({"parts": {"webhook": webhook_part()}})
    shown = labels(svg)
    assert shown.index("new") < shown.index("duplicate") < shown.index("trivial")


def test_the_webhook_panel_shows_acknowledged_and_credited_when_events_are_credited_after_the_answer():
    # As the webhook part reports it when task workers credit the events: "new" is then what the
    # endpoint acknowledged, and the end-to-end rate sits beside the tables.
    part = webhook_part(credited=Figure("webhook credited end to end", "events/s", [90.0, 95.0]))
    part["extra latencies"] = {"new": Figure("p50", "ms", [3.0])}  # latencies, not rates: left out
    shown = labels(report._chart({"parts": {"webhook": part}}))
    assert "new" not in shown
    assert (
        shown.index("new acknowledged")
        < shown.index("credited end to end")
        < shown.index("duplicate")
        < shown.index("trivial")
    )
    assert "92" in shown  # the median of the end-to-end rate


def test_the_webhook_panel_takes_rates_under_the_names_the_task_names():
    part = webhook_part(end_to_end={"credited_end_to_end": rate("credited", 90)})
    part["throughput"]["new acknowledged"] = rate("acknowledged", 400)
    shown = labels(report._chart({"parts": {"webhook": part}}))
    assert shown.index("new acknowledged") < shown.index("credited end to end") < shown.index("new")


def test_no_chart_without_ledger_or_webhook_figures():
    assert report._chart({"parts": {"scale": {}}}) is None
    assert report._chart({"parts": {"webhook": {"throughput": {}}}}) is None


def test_the_changes_section_groups_targets_and_names_each_miss():
    rows = [
        ("admin GET /admin/billing/ledgerentry/", "< 500 ms", "20 ms", True),
        ("admin GET /admin/billing/profile/", "< 500 ms", "700 ms", False),
        ("charge overhead beyond Stripe, p50", "< 10 ms", "27 ms", False),
        ("webhook duplicates vs trivial view", "≥ 0.5x", "0.6x", True),
        ("show_credits", "instant (< 100 ms)", "300 ms", False),
    ]
    text = "\n".join(report._changes_section(rows))
    assert "bench/NOTES.md" in text
    assert (
        "**Admin pages over the big ledger** (2 targets, 1 of 2 NOT met (admin GET /admin/billing/profile/: 700 ms))"
        in text
    )
    assert "**Charge endpoint** (1 target, 1 of 1 NOT met (charge overhead beyond Stripe, p50: 27 ms))" in text
    assert "**Webhook endpoint** (1 target, met)" in text
    # A miss no group explains is named on its own line, pointing at the notes.
    assert "**show_credits**: 300 ms, target instant (< 100 ms), NOT met" in text


def test_a_report_is_written_with_its_chart_and_raw_results(tmp_path):
    import json

    result = {
        "smoke": True,
        "started": "now",
        "seconds": 1.0,
        "machine": {"CPU": "test"},
        "parts": {"webhook": webhook_part()},
        "errors": {},
    }
    written = report.write(result, tmp_path / "BENCHMARKS.md")
    assert [path.name for path in written] == ["BENCHMARKS.md", report.CHART_NAME]
    document = written[0].read_text()
    assert f"![Webhook throughput]({report.CHART_NAME})" in document
    assert "## What was changed for these figures, and what limits them" in document
    assert json.loads(json.dumps(report.to_json(result), default=str))["parts"]["webhook"]["throughput"]["new"]
