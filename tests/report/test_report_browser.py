"""The HTML report in headless Chromium (Debian's binary driven by Playwright; nothing is downloaded).

Checks what a reader sees: the heatmap SVG is rendered and non-empty, the numbers in the page equal the
results, a hostile method name stays text, and the page makes no network request. A full-page screenshot is
saved to ``test-artifacts/report.png``.
"""
from __future__ import annotations

import pytest

from cvit_bench.report import build_report
from cvit_bench.report.formatting import fmt_value
from cvit_bench.formats.results import write_results
from browser import ARTIFACTS, open_page, screenshot
from fixtures_results import EVIL, SUMMARY_COLUMNS, final_row_values, fixture_runs

pytestmark = pytest.mark.browser

@pytest.fixture(scope="module")
def page_state(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    runs = fixture_runs()
    paths = []
    for name, results in runs.items():
        write_results(root / f"{name}.json", results)
        paths.append(root / f"{name}.json")
    outputs = build_report(paths, root / "out", formats=("svg",))  # the page inlines SVG; no PDF needed
    with open_page(outputs.html.as_uri()) as st:
        screenshot(st.page, "report.png")
        yield {"runs": runs, "page": st.page, "requests": st.requests, "dialogs": st.dialogs, "console": st.console}


def test_heatmap_svg_is_rendered_and_non_empty(page_state):
    page = page_state["page"]
    heatmaps = page.locator('section.run figure[data-figure="heatmap"] svg')
    assert heatmaps.count() == len(page_state["runs"])
    first = heatmaps.first
    box = first.bounding_box()
    assert box is not None and box["width"] > 200 and box["height"] > 100
    assert first.evaluate("el => el.querySelectorAll('path').length") > 10
    seq = page_state["runs"]["seq"]
    drawn = first.evaluate("el => Array.from(el.querySelectorAll('text')).map(t => t.textContent.trim())")
    expected = [fmt_value(v) for row in seq["matrix"]["values"] for v in row if v is not None]
    assert sorted(t for t in drawn if t in expected) == sorted(expected)


def test_numbers_in_the_page_equal_the_results(page_state):
    page = page_state["page"]
    table = page.locator('table[data-table="summary"]').first
    rows = table.locator("tbody tr")
    shown = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        label = row.locator("th").inner_text()
        shown[label] = [c.strip() for c in row.locator("td").all_inner_texts()][1:]  # drop the kind column
    body = page.locator("body").inner_text()
    for index, results in enumerate(page_state["runs"].values()):
        expected = [fmt_value(v) for v in final_row_values(results)]
        expected += [fmt_value(results["summary"][k], "—") for k in SUMMARY_COLUMNS]
        assert shown[results["method"]["name"]] == expected
        for text in expected:
            assert text in body
        section = page.locator("section.run").nth(index)
        assert section.locator("h2").inner_text().startswith(results["method"]["name"])
        run_summary = section.locator('table[data-table="run-summary"] td').all_inner_texts()
        assert run_summary[:2] == [fmt_value(results["summary"]["AP"], "—"), fmt_value(results["summary"]["MAP"], "—")]


def test_script_in_a_method_name_is_inert_text(page_state):
    page = page_state["page"]
    assert page_state["dialogs"] == []
    assert page.evaluate("document.querySelectorAll('script').length") == 0
    heading = page.locator("section.run h2", has_text="alert(1)")
    assert heading.count() == 1 and heading.is_visible()
    assert heading.inner_text().startswith(EVIL)


def test_no_network_requests(page_state):
    page = page_state["page"]
    assert page_state["requests"] == []
    # the guard itself works: a request the page would make is seen (and aborted)
    outcome = page.evaluate("fetch('https://example.invalid/x').then(() => 'loaded', () => 'blocked')")
    assert outcome == "blocked"
    assert page_state["requests"] == ["https://example.invalid/x"]


def test_screenshot_saved(page_state):
    shot = ARTIFACTS / "report.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
