"""Reports from fixture results: tables equal results.json, LaTeX is compile-shaped, figures and HTML hold
the numbers, mixing groups is refused, re-running is byte-identical."""
from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from matplotlib.patches import Rectangle

from cvit_bench.cli.report import report_command
from cvit_bench.errors import CvitError, DataError, MissingFileError
from cvit_bench.report import build_report, build_report_from_results
from cvit_bench.report.figures import (
    DIAGONAL_COLOR,
    forgetting_series,
    heatmap_figure,
    heatmap_svg,
    if_rate_bars,
)
from cvit_bench.report.formatting import escape_latex, fmt_value
from cvit_bench.report.html import flatten, make_environment, routing_view
from cvit_bench.report.runs import collect_warnings, final_row_label
from cvit_bench.report.tables import best_cells, summary_table, to_latex
from cvit_bench.formats.results import write_results
from fixtures_results import EVIL, SUMMARY_COLUMNS, final_row_values, fixture_runs, make_results

@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    runs = fixture_runs()
    paths = []
    for name, results in runs.items():
        write_results(root / f"{name}.json", results)
        paths.append(root / f"{name}.json")
    outputs = build_report(paths, root / "out")
    return {"outputs": outputs, "runs": runs, "paths": paths, "root": root}


def _group_file(report, name: str) -> Path:
    return next(p for p in report["outputs"].tables if p.parent.parent.name == "groups" and p.name == name)


# ------------------------------------------------------------------------------------------------- tables
def test_csv_values_equal_results(report):
    rows = list(csv.DictReader(io.StringIO(_group_file(report, "main.csv").read_text())))
    by_name = {r["method"]: r for r in rows}
    assert [r["kind"] for r in rows] == ["reference", "method", "method"]  # references first
    for results in report["runs"].values():
        row = by_name[results["method"]["name"]]
        for task, value in zip(results["matrix"]["tasks"], final_row_values(results)):
            assert row[task] == ("" if value is None else repr(float(value)))
        for key in SUMMARY_COLUMNS:
            value = results["summary"][key]
            assert row[key] == ("" if value is None else repr(float(value))), key


def _markdown_rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]
    return cells[2:]  # drop header and alignment rows


def test_markdown_values_equal_results(report):
    rows = _markdown_rows(_group_file(report, "main.md").read_text())
    assert len(rows) == 3
    labels = {r[0]: r for r in rows}
    for results in report["runs"].values():
        name = results["method"]["name"]
        row = labels[name if name != EVIL else next(k for k in labels if "script" in k)]
        texts = [c.replace("**", "") for c in row[2:]]
        expected = [fmt_value(v) for v in final_row_values(results)]
        expected += [fmt_value(results["summary"][k], "—") for k in SUMMARY_COLUMNS]
        assert texts == expected
    evil_label = next(k for k in labels if "script" in k)
    assert "\\<script\\>" in evil_label and "\\|" not in evil_label


def _latex_rows(tex: str) -> list[list[str]]:
    """Cells of the column-header row and the data rows (the grouping header with multicolumns is skipped)."""
    body = tex.split("\\toprule", 1)[1].split("\\bottomrule")[0]
    return [[c.strip() for c in re.split(r"(?<!\\)&", ln.strip()[:-2])]
            for ln in body.splitlines() if ln.strip().endswith("\\\\") and "multicolumn" not in ln]


def test_latex_is_compile_shaped_and_escaped(report):
    tex = _group_file(report, "main.tex").read_text()
    # balanced environments, in nesting order
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{([^}]+)\}", tex):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env
    assert stack == []
    # balanced braces once escaped braces are removed
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    assert tex.count("\\toprule") == 1 and tex.count("\\bottomrule") == 1
    # every data row has one cell per column: label + 4 tasks + 4 aggregates
    spec = re.search(r"\\begin\{tabular\}\{([^}]*)\}", tex).group(1)
    rows = _latex_rows(tex)
    assert len(rows) == 4  # header + 3 runs
    assert all(len(r) == len(spec) == 9 for r in rows)
    evil_row = next(r for r in rows if "script" in r[0])
    assert evil_row[0] == escape_latex(EVIL)
    assert not re.search(r"(?<!\\)[&%$#_]", evil_row[0].replace("\\textbackslash{}", ""))


def test_latex_values_and_bold(report):
    rows = {r[0]: r[1:] for r in _latex_rows(_group_file(report, "main.tex").read_text())[1:]}
    seq, evil, ref = report["runs"]["seq"], report["runs"]["evil"], report["runs"]["multitask"]
    unbold = {k: [re.sub(r"\\textbf\{(.*)\}", r"\1", c) for c in v] for k, v in rows.items()}
    assert unbold["seq-lora"] == [fmt_value(v) for v in final_row_values(seq)] + [
        fmt_value(seq["summary"][k], "--") for k in SUMMARY_COLUMNS]
    # the reference row is never bold, although it has the highest scores
    assert not any("textbf" in c for c in rows["multitask"])
    assert unbold["multitask"][:4] == [fmt_value(v) for v in final_row_values(ref)]
    # evil has the higher AP/MAP/BWT; seq and evil tie on MIF (both bold)
    evil_cells = rows[escape_latex(EVIL)]
    assert evil_cells[4].startswith("\\textbf") and not rows["seq-lora"][4].startswith("\\textbf")
    assert evil_cells[6].startswith("\\textbf")  # BWT -3.75 beats -15.65 (closer to 0)
    assert fmt_value(seq["summary"]["MIF"]) == fmt_value(evil["summary"]["MIF"])
    assert rows["seq-lora"][7].startswith("\\textbf") and evil_cells[7].startswith("\\textbf")


def test_best_cells_rules():
    a = make_results("a", values=[[50.0, 40.0]], tasks=["scienceqa", "gqa"], if_values=[[90.0, 80.0]],
                     zero_shot=None)
    b = make_results("b", values=[[60.0, None]], tasks=["scienceqa", "gqa"], if_values=[[90.0, 85.0]],
                     zero_shot=None)
    ref = make_results("ref", values=[[99.0, 99.0]], tasks=["scienceqa", "gqa"], kind="reference",
                       if_values=[[99.0, 99.0]], zero_shot=None)
    table = summary_table([a, b, ref])
    assert [r.label for r in table.rows] == ["ref", "a", "b"]
    bold = best_cells(table)
    # scienceqa: b wins; gqa: only a has a value -> nothing to beat, not bold; AP: b null? no, AP of b is null
    assert (2, 0) in bold and (1, 0) not in bold
    assert not any(col == 1 for _, col in bold)
    assert not any(row == 0 for row, _ in bold)
    assert b["summary"]["AP"] is None and not any(col == 2 for _, col in bold)


def test_escape_latex_every_special():
    assert escape_latex("&%$#_{}~^\\<>") == (
        r"\&\%\$\#\_\{\}\textasciitilde{}\textasciicircum{}\textbackslash{}\textless{}\textgreater{}")


def test_per_run_matrix_csv(report):
    seq = report["runs"]["seq"]
    path = next(p for p in report["outputs"].tables if p.parent.name == "01-seq-lora" and p.name == "matrix.csv")
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert rows[0] == ["stage", *seq["matrix"]["tasks"]]
    for row, label, values in zip(rows[1:], seq["matrix"]["stages"], seq["matrix"]["values"]):
        assert row == [label, *("" if v is None else repr(float(v)) for v in values)]


# ------------------------------------------------------------------------------------------------ figures
def test_every_figure_in_three_formats(report):
    figures = report["outputs"].figures
    stems = {p.with_suffix("") for p in figures}
    # 3 runs x 3 figures + comparison + overlay (multitask has a single row: no curve, but 2 runs do)
    assert len(stems) == 3 * 3 + 2
    for stem in stems:
        png, svg, pdf = (stem.with_name(f"{stem.name}.{ext}") for ext in ("png", "svg", "pdf"))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.read_bytes()[:5] == b"%PDF-"
        assert ET.fromstring(svg.read_bytes()).tag.endswith("svg")


def _svg_texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    return ["".join(el.itertext()).strip() for el in root.iter() if el.tag.endswith("text")]


def test_heatmap_prints_every_value_and_leaves_nulls_blank():
    results = make_results()
    texts = _svg_texts(heatmap_svg(results))
    numbers = [t for t in texts if re.fullmatch(r"-?\d+\.\d\d", t)]
    expected = [fmt_value(v) for row in results["matrix"]["values"] for v in row if v is not None]
    assert sorted(numbers) == sorted(expected)
    assert any("CIDEr" in t for t in texts) and "0: zero-shot" in texts


def test_heatmap_marks_the_diagonal():
    results = make_results()
    fig = heatmap_figure(results)
    ax = fig.axes[0]
    marked = [(p.get_x(), p.get_y()) for p in ax.patches
              if isinstance(p, Rectangle) and p.get_edgecolor()[:3] == pytest.approx(
                  tuple(int(DIAGONAL_COLOR[i:i + 2], 16) / 255 for i in (1, 3, 5)))]
    # row 0 is zero-shot; stage t (row t) outlines column t-1
    assert sorted(marked) == [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_forgetting_series_starts_at_the_learned_stage():
    results = make_results()
    series = forgetting_series(results)
    assert series["scienceqa"] == ([1, 2, 3, 4], [80.12, 70.5, 65.0, 60.25])
    assert series["flickr30k"] == ([3, 4], [140.33, 120.0])
    assert series["imagenet"] == ([4], [90.1])


def test_if_rate_bars_use_the_final_row_and_downstream():
    results = make_results()
    assert if_rate_bars(results) == [("scienceqa", 93.75, False), ("textvqa", 91.0, False),
                                     ("flickr30k", 85.25, False), ("imagenet", 98.5, False),
                                     ("vizwiz", 77.25, True)]


# ---------------------------------------------------------------------------------------------------- HTML
def test_html_is_self_contained_and_escaped(report):
    html = report["outputs"].html.read_text()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html
    assert html.count('data-figure="heatmap"') == 3


def test_html_shows_cells_routing_and_warnings(report):
    html = report["outputs"].html.read_text()
    evil = report["runs"]["evil"]
    cell = evil["cells"]["4/textvqa"]
    row = re.search(r'<tr class="warn"><th scope="row">4/textvqa</th>(.*?)</tr>', html).group(1)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", row) == [
        fmt_value(cell["value"]), cell["metric"], str(cell["n"]), fmt_value(cell["stderr"]),
        fmt_value(cell["if_rate"]), "2", "1", str(cell["n_predictions"])]
    assert "missing cell: after stage 3, task textvqa was not evaluated (null)" in html
    assert "predictions for 3 samples failed" in html
    routing = re.search(r'<table class="num" data-table="routing">(.*?)</table>', html, re.DOTALL).group(1)
    assert re.findall(r"<th scope=\"col\">([^<]*)</th>", routing) == ["task", "block0", "block1", "block2", "total"]
    assert '<th scope="row">textvqa</th><td></td><td>7</td><td>1</td><td>8</td>' in routing
    for key in ("benchmark version", "template set", "metric profile", "git_commit", "max_new_tokens.scienceqa"):
        assert key in html


def test_collect_warnings_order_and_content():
    results = make_results(values=[[80.0, None], [None, 50.0]], tasks=["scienceqa", "gqa"],
                           if_values=[[90.0, None], [None, 80.0]], zero_shot=None,
                           incomplete={"2/gqa": (0, 4)}, warnings=["from the file"])
    assert collect_warnings(results) == [
        "missing cell: after stage 2, task scienceqa was not evaluated (null)",
        "cell 2/gqa: 0 missing (failed) and 4 empty predictions of 200 samples",
        "from the file",
    ]


def test_environment_autoescapes_untrusted_names():
    env = make_environment()
    assert env.from_string("{{ x }}").render(x=EVIL).startswith("&lt;script&gt;")
    assert flatten({"b": {"c": 1}, "a": [1, 2], "d": None}) == [("a", "[1, 2]"), ("b.c", "1"), ("d", "null")]
    assert routing_view({}) is None


# ------------------------------------------------------------------------------------- groups and errors
def test_mixed_groups_are_refused_with_both_groups_named(tmp_path):
    a, b = make_results("a"), make_results("b", profile="standard", template_set="five")
    write_results(tmp_path / "a.json", a)
    write_results(tmp_path / "b.json", b)
    with pytest.raises(CvitError) as err:
        build_report([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "out")
    message = str(err.value)
    assert "profile 'compat'" in message and "profile 'standard'" in message
    assert "template set 'five'" in message and "--allow-mixed" in message
    assert str(tmp_path / "a.json") in message and str(tmp_path / "b.json") in message
    assert not (tmp_path / "out" / "report.html").exists()


def test_allow_mixed_reports_groups_separately(tmp_path):
    a, b = make_results("a"), make_results("b", profile="standard")
    outputs = build_report_from_results([(None, a), (None, b)], tmp_path / "out", allow_mixed=True,
                                        formats=("svg",))
    assert {p.suffix for p in outputs.figures} == {".svg"}
    assert [len(g.runs) for g in outputs.groups] == [1, 1]
    mains = sorted(p for p in outputs.tables if p.name == "main.csv")
    assert [len(list(csv.DictReader(p.open()))) for p in mains] == [1, 1]
    html = outputs.html.read_text()
    assert 'data-mixed="true"' in html
    assert not any(p.name.startswith("comparison") for p in outputs.figures)  # never compared across groups


def test_rebuilding_gives_identical_files(tmp_path):
    results = make_results("one")
    first = build_report_from_results([(None, results)], tmp_path / "a")
    second = build_report_from_results([(None, results)], tmp_path / "b")
    for p in first.files:
        q = tmp_path / "b" / p.relative_to(tmp_path / "a")
        assert p.read_bytes() == q.read_bytes(), p.name
    assert len(first.files) == len(second.files)


def test_bad_inputs_name_file_and_field(tmp_path):
    with pytest.raises(MissingFileError):
        build_report([tmp_path / "nope.json"], tmp_path / "out")
    bad = make_results()
    bad["matrix"]["stages"][1] = 1
    with pytest.raises(DataError) as err:
        build_report_from_results([(tmp_path / "bad.json", bad)], tmp_path / "out")
    assert "bad.json" in str(err.value) and "matrix.stages" in str(err.value)
    bad = make_results()
    bad["matrix"]["values"][2][0] = "80"
    with pytest.raises(DataError, match="row 2, task scienceqa"):
        build_report_from_results([(tmp_path / "bad.json", bad)], tmp_path / "out")
    bad = make_results()
    bad["cells"]["1/scienceqa"] = 80.12
    with pytest.raises(DataError, match="record 1/scienceqa: field 'cells'"):
        build_report_from_results([(tmp_path / "bad.json", bad)], tmp_path / "out")
    with pytest.raises(CvitError):
        build_report([], tmp_path / "out")
    with pytest.raises(CvitError, match="unknown figure format"):
        build_report_from_results([(None, make_results())], tmp_path / "out", formats=("jpg",))


def test_prefix_run_reports_its_last_stage():
    results = make_results(values=[[80.0, None, None], [70.0, 60.0, None]], tasks=["scienceqa", "textvqa", "gqa"],
                           if_values=[[90.0, None, None], [85.0, 80.0, None]])
    assert final_row_label(results) == "2"
    table = summary_table([results])
    assert table.rows[0].task_values == (70.0, 60.0, None)
    assert "& 70.00 & 60.00 &  &" in to_latex(table)


def test_cli(report, tmp_path):
    runner = CliRunner()
    paths = [str(p) for p in report["paths"]]
    result = runner.invoke(report_command, [paths[1], "--out", str(tmp_path / "cli"), "--format", "png",
                                            "--format", "svg"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "report.html").is_file()
    written = {p.suffix for p in (tmp_path / "cli" / "runs").rglob("heatmap.*")}
    assert written == {".png", ".svg"}
    assert "predictions for 3 samples failed" in result.output
    write_results(tmp_path / "std.json", make_results("x", profile="standard"))
    result = runner.invoke(report_command, [paths[0], str(tmp_path / "std.json"), "--out", str(tmp_path / "m")])
    assert isinstance(result.exception, CvitError)
