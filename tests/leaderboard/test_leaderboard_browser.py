"""The leaderboard site in headless Chromium (Debian's binary driven by Playwright; nothing is downloaded).

The board holds a real re-scored submission, the seed entries and one hostile entry (method name with
``<script>``, a ``javascript:`` paper link, HTML in the description) written straight into the board folder, as
if the file had been edited by hand (``submit`` refuses such links; the site must be inert anyway).
Checks: sorting (numeric-aware, ``aria-sort``), filters, search, links, inert hostile text, figures loading
under the Content-Security-Policy, and no network request. Screenshot: ``test-artifacts/leaderboard.png``.
"""
from __future__ import annotations

import pytest

from cvit_bench.leaderboard.board import BoardKey, Entry, read_entries, write_entry
from cvit_bench.leaderboard.seeds import seed_board
from cvit_bench.leaderboard.site import build_site
from cvit_bench.leaderboard.submit import submit
from browser import open_page, screenshot
from leaderboard_fixtures import META

pytestmark = pytest.mark.browser
EVIL_NAME = "<script>alert(1)</script>"
SINGLE = "cvit-single--vicuna7b-pretrain--compat"


@pytest.fixture(scope="module")
def site(tmp_path_factory, board_prepared, bundle):
    root = tmp_path_factory.mktemp("lb-browser")
    board = root / "board"
    submit(bundle, board, data=board_prepared)
    seed_board(board)
    write_entry(board, Entry(
        id="evil-0001", tier="reported", kind="method", board=BoardKey("cvit", "single", "vicuna7b-pretrain", "compat"),
        method={"name": EVIL_NAME, "family": "prompt", "description": "<img src=x onerror=alert(3)>"},
        base_model={"name": "vicuna7b-pretrain", "revision": "x"}, tasks=["scienceqa"], final_row={"scienceqa": 5.0},
        summary={"AP": 5.0}, summary_status={"AP": "reported"},
        links={"paper": "javascript:alert(2)", "code": "https://example.org/code"}, contact="x"))
    build_site(board, root / "site")
    return {"root": root / "site", "entries": read_entries(board)}


@pytest.fixture(scope="module")
def browser_page(site):
    with open_page((site["root"] / "index.html").as_uri(), width=1400) as st:
        yield {"page": st.page, "requests": st.requests, "dialogs": st.dialogs, "console": st.console}
        st.page.goto((site["root"] / "index.html").as_uri())
        screenshot(st.page, "leaderboard.png")


def _column(page, board: str, header: str, section: str) -> list[str]:
    table = page.locator(f'table[data-board="{board}"]')
    headers = table.locator("thead th").all_inner_texts()
    index = [h.strip(" ▲▼") for h in headers].index(header)
    rows = table.locator(f'tbody[data-section="{section}"] tr.entry')
    return [rows.nth(i).locator("th, td").nth(index).inner_text().strip() for i in range(rows.count())]


def _numbers(texts: list[str]) -> list[float]:
    return [float(t.rstrip("nr⚑ ").strip()) for t in texts if t.rstrip("nr⚑ ").strip() not in ("", "—")]


def test_sorting_is_numeric_aware_and_sets_aria_sort(browser_page):
    page = browser_page["page"]
    bwt = page.locator(f'table[data-board="{SINGLE}"] thead th[data-col="BWT"]')
    bwt.click()
    assert bwt.get_attribute("aria-sort") == "ascending"
    values = _numbers(_column(page, SINGLE, "BWT", "reported"))
    assert values == sorted(values) and values[0] == -49.71 and values[-1] == -3.23   # text order would put -3.23 first
    bwt.click()
    assert bwt.get_attribute("aria-sort") == "descending"
    assert _numbers(_column(page, SINGLE, "BWT", "reported")) == sorted(values, reverse=True)
    # other headers reset; the reference rows stay in their own section
    assert page.locator(f'table[data-board="{SINGLE}"] thead th[data-col="AP"]').get_attribute("aria-sort") == "none"
    assert set(_column(page, SINGLE, "Method", "reference")) == {"Multitask reference", "Zero-shot reference",
                                                                "DirLoRA† reference"}
    name = page.locator(f'table[data-board="{SINGLE}"] thead th[data-col="method"]')
    name.focus()
    page.keyboard.press("Enter")
    names = [n.split(" ")[0] for n in _column(page, SINGLE, "Method", "reported")]
    assert names[:2] == ["<script>alert(1)</script>", "DoRA"] and names[-1] == "SMoLoRA"
    assert name.get_attribute("aria-sort") == "ascending"


def test_filters_by_family_base_model_and_tier(browser_page, site):
    page = browser_page["page"]
    visible = lambda: page.locator("tr.entry:visible")
    total = len(site["entries"])
    assert visible().count() == total
    page.select_option("#filter-family", "moe-lora")
    expected = sum(e.family == "moe-lora" for e in site["entries"])
    assert visible().count() == expected > 3
    assert set(visible().evaluate_all("rows => rows.map(r => r.dataset.family)")) == {"moe-lora"}
    page.select_option("#filter-family", "")
    page.select_option("#filter-tier", "rescored")
    assert visible().count() == 1 and page.locator("section.board:visible").count() == 1
    assert "Seq-LoRA (test)" in visible().first.inner_text()
    page.select_option("#filter-tier", "")
    page.select_option("#filter-base", "llava13b")
    assert visible().count() == 2
    assert page.locator("section.board:visible h2").all_inner_texts() == [
        "coin · templates original · base model llava13b · profile compat"]
    page.select_option("#filter-base", "")
    assert visible().count() == total and page.inner_text("#shown-count") == f"{total} shown"


def test_search(browser_page):
    page = browser_page["page"]
    page.fill("#search", "smolora")
    rows = page.locator("tr.entry:visible")
    assert rows.count() == 1 and rows.first.get_attribute("data-entry").startswith("seed-smolora")
    page.fill("#search", "REGULARIZATION")
    texts = page.locator("tr.entry:visible").all_inner_texts()
    assert len(texts) >= 4 and all("regularization" in t for t in texts)
    page.fill("#search", "no such method at all")
    assert page.locator("tr.entry:visible").count() == 0 and page.locator("section.board:visible").count() == 0
    page.fill("#search", "")
    assert page.locator("section.board:visible").count() == page.locator("section.board").count()


def test_hostile_entry_renders_inert_text(browser_page):
    page = browser_page["page"]
    assert browser_page["dialogs"] == []
    assert page.evaluate("Array.from(document.scripts).map(s => s.getAttribute('src'))") == ["static/board.js"]
    row = page.locator('tr[data-entry="evil-0001"]')
    assert row.locator("th a").inner_text() == EVIL_NAME
    assert row.locator('a[href^="javascript:"]').count() == 0 and page.locator('a[href^="javascript:"]').count() == 0
    assert "paper: javascript:alert(2)" in row.locator(".inert-link").inner_text()
    row.locator(".inert-link").click()
    assert browser_page["dialogs"] == [] and page.url.endswith("index.html")
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(a => a.getAttribute('href'))")
    assert all(h.startswith(("https://", "#", "entries/")) for h in hrefs)
    page.goto(page.url.replace("index.html", "entries/evil-0001.html"))
    assert page.locator("h1").inner_text() == EVIL_NAME
    assert page.locator("img").count() == 0 and "<img src=x onerror=alert(3)>" in page.locator("body").inner_text()
    assert browser_page["dialogs"] == []
    page.go_back()


def test_links_navigate_and_entry_figures_load_under_the_csp(browser_page, site):
    page = browser_page["page"]
    rescored = next(e for e in site["entries"] if e.tier == "rescored")
    page.locator(f'tr[data-entry="{rescored.id}"] th a').click()
    page.wait_for_load_state("load")
    assert page.url.endswith(f"entries/{rescored.id}.html")
    assert page.locator("h1").inner_text() == "Seq-LoRA (test)"
    widths = page.eval_on_selector_all("figure img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
    assert len(widths) == 2 and all(w and w > 100 for w in widths)
    assert page.locator('a[data-link="paper"]').get_attribute("href") == META["links"]["paper"]
    page.locator('a[data-link="back"]').click()
    page.wait_for_load_state("load")
    assert page.url.endswith("index.html#board-cvit-single--tiny-llava--compat")
    seed = next(e for e in site["entries"] if e.name == "SeqLoRA" and e.board.template_set == "single" and not e.board.variant)
    page.locator(f'tr[data-entry="{seed.id}"] th a').click()
    page.wait_for_load_state("load")
    body = page.locator("body").inner_text()
    assert "reported, not recomputable" in body and "arXiv 2411.13949v1" in body
    assert page.locator('ul.warnings li[data-field="summary.AP"]').count() == 1
    page.go_back()
    assert not [m for m in browser_page["console"] if "Content Security Policy" in m or "Refused" in m]


def test_no_network_requests(browser_page):
    assert browser_page["requests"] == []
