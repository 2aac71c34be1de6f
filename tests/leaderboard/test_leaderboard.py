"""Leaderboard: bundles, verification by re-scoring, seeds, and the static site (HTML checked as text here;
the browser tests drive it in Chromium).

Submissions are real: generated CVIT raw files → ``prepare`` → prediction files for every required cell →
``score_directory`` → ``pack`` → ``submit`` against the same prepared references.
"""
from __future__ import annotations

import copy
import json
import re
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from cvit_bench.cli import main
from cvit_bench.errors import DataError, SchemaVersionError
from cvit_bench.leaderboard.board import NOT_RECOMPUTABLE, BoardKey, Entry, Submitter, read_entries, write_entry
from cvit_bench.leaderboard.bundle import Limits, pack
from cvit_bench.leaderboard.schema import is_https, validate_meta
from cvit_bench.leaderboard.seeds import seed_board, seed_files
from cvit_bench.leaderboard.site import build_site
from cvit_bench.leaderboard.submit import submit
from cvit_bench.leaderboard.verify import required_cells
from cvit_bench.benchmark import load_benchmark
from leaderboard_fixtures import META, make_prepared, read_tar, write_tar


def _board_files(board: Path) -> list[str]:
    return sorted(p.relative_to(board).as_posix() for p in board.rglob("*")) if board.exists() else []


def _repack(src: Path, dst: Path, edit) -> Path:
    members = read_tar(src)
    edit(members)
    return write_tar(dst, members)


# ------------------------------------------------------------------------------------------------ pack
def test_pack_writes_manifest_of_every_file_and_is_deterministic(run_out, bundle, tmp_path):
    members = read_tar(bundle)
    sub = json.loads(members["submission.json"])
    assert sub["schema_version"] == 1 and sub["tier"] == "rescored" and sub["meta"] == META
    listed = {f["path"]: f for f in sub["files"]}
    assert set(listed) == set(members) - {"submission.json"}
    spec = load_benchmark("cvit")
    assert {f"predictions/{s}/{t}.jsonl" for s, t in required_cells(spec)} | {"results.json"} == set(listed)
    pf = listed["predictions/6/vqav2.jsonl"]
    assert pf["rows"] == len((run_out / "predictions/6/vqav2.jsonl").read_text().splitlines()) == 6
    import hashlib
    assert pf["sha256"] == hashlib.sha256(members["predictions/6/vqav2.jsonl"]).hexdigest()
    assert listed["results.json"]["rows"] is None
    again = pack(run_out, META, tmp_path / "again.tar.gz")
    assert again.read_bytes() == bundle.read_bytes()


@pytest.mark.parametrize("edit, field", [
    (lambda m: m["links"].update(paper="javascript:alert(1)"), "links.paper"),
    (lambda m: m["links"].update(code="http://example.org"), "links.code"),
    (lambda m: m["method"].update(family="magic"), "method.family"),
    (lambda m: m.pop("contact"), "(top level)"),
    (lambda m: m["extra_data"].update(used=True), "extra_data"),
])
def test_metadata_schema_refuses_bad_fields_and_names_them(edit, field):
    meta = copy.deepcopy(META)
    edit(meta)
    with pytest.raises(DataError) as exc:
        validate_meta(meta)
    assert exc.value.field == field


def test_https_rule():
    assert is_https("https://arxiv.org/abs/1") and not is_https("javascript:alert(1)")
    assert not is_https("https://x.org/\" onmouseover=") and not is_https("http://x.org") and not is_https(None)


# ------------------------------------------------------------------------------------------------ submit
def test_submit_rescores_and_resubmission_replaces(bundle, board_prepared, run_out, tmp_path):
    board = tmp_path / "board"
    first = submit(bundle, board, data=board_prepared)
    e = first.entry
    assert not first.replaced and e.tier == "rescored" and e.flags == []
    results = json.loads((run_out / "results.json").read_text())
    assert e.summary == results["summary"] and e.results["matrix"]["values"] == results["matrix"]["values"]
    assert e.board == BoardKey("cvit", "single", "tiny-llava", "compat")
    assert e.checkpoints == [f"{t:064x}" for t in range(1, 7)]
    assert set(e.summary_status.values()) == {"recomputed"}
    assert e.results["provenance"]["rescored_by"].startswith("cvit-bench")
    second = submit(bundle, board, data=board_prepared, owner=META["contact"])   # the owner, as the maintainer checked it
    assert second.replaced and second.entry.id == e.id
    assert [x.id for x in read_entries(board)] == [e.id]
    assert _board_files(board) == ["submissions", "submissions/.lock", "submissions/bundles",
                                   f"submissions/bundles/{e.bundle_sha256}.tar.gz", f"submissions/{e.id}.json"]
    assert (board / "submissions/bundles" / f"{e.bundle_sha256}.tar.gz").read_bytes() == bundle.read_bytes()
    # the same submitter replaced its own entry: the first version is in the history, with its bundle and date
    assert second.entry.submitter == Submitter("contact", META["contact"])
    assert [h["bundle_sha256"] for h in second.entry.history] == [e.bundle_sha256]
    assert second.entry.history[0]["submitted_utc"] and second.entry.history[0]["replaced_utc"]


def test_claimed_ap_that_differs_from_the_predictions_is_flagged(run_out, board_prepared, tmp_path):
    inflated = tmp_path / "run"
    inflated.mkdir()
    results = json.loads((run_out / "results.json").read_text())
    results["summary"]["AP"] += 5.0
    results["matrix"]["values"][0][0] = 99.0
    (inflated / "results.json").write_text(json.dumps(results))
    out = submit(pack(inflated, META, tmp_path / "b.tar.gz", predictions=run_out / "predictions"), tmp_path / "board", data=board_prepared)
    flags = {f["field"]: f for f in out.entry.flags}
    assert set(flags) == {"summary.AP", "matrix.1/scienceqa"}
    assert flags["summary.AP"]["recomputed"] == pytest.approx(flags["summary.AP"]["submitted"] - 5.0)
    assert flags["matrix.1/scienceqa"] == {"field": "matrix.1/scienceqa", "submitted": 99.0, "recomputed": 100.0,
                                           "difference": 1.0}
    assert out.entry.summary["AP"] == pytest.approx(results["summary"]["AP"] - 5.0)   # the board shows its own number
    # a difference within 0.01 is not flagged
    results["summary"]["AP"] -= 5.0 - 0.009
    results["matrix"]["values"][0][0] = 100.0
    (inflated / "results.json").write_text(json.dumps(results))
    assert submit(pack(inflated, META, tmp_path / "c.tar.gz", predictions=run_out / "predictions"), tmp_path / "board",
                  data=board_prepared, owner=META["contact"]).entry.flags == []


def test_tampered_predictions_are_refused_and_nothing_is_written(bundle, board_prepared, tmp_path):
    def edit(m):
        m["predictions/6/vqav2.jsonl"] = m["predictions/6/vqav2.jsonl"].replace(b'"prediction": "', b'"prediction":"x', 1)   # same size
    board = tmp_path / "board"
    with pytest.raises(DataError, match="hash mismatch") as exc:
        submit(_repack(bundle, tmp_path / "t.tar.gz", edit), board, data=board_prepared)
    assert exc.value.record == "predictions/6/vqav2.jsonl" and exc.value.field == "sha256"
    assert _board_files(board) == []


@pytest.mark.parametrize("name, problem", [
    ("../escape.txt", "'..' in path"),
    ("predictions/../../escape.txt", "'..' in path"),
    ("/tmp/escape.txt", "absolute path"),
])
def test_archive_with_unsafe_paths_is_refused_before_extraction(bundle, board_prepared, tmp_path, name, problem):
    members = read_tar(bundle)
    members[name] = b"pwned"
    hostile = write_tar(tmp_path / "evil.tar.gz", members)
    board = tmp_path / "board"
    with pytest.raises(DataError, match=re.escape(problem)):
        submit(hostile, board, data=board_prepared)
    assert _board_files(board) == []
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/escape.txt").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE])
def test_links_and_devices_are_refused(bundle, board_prepared, tmp_path, kind):
    info = tarfile.TarInfo("predictions/6/link.jsonl")
    info.type = kind
    info.linkname = "/etc/passwd"
    hostile = write_tar(tmp_path / "evil.tar.gz", read_tar(bundle), extra=[info])
    with pytest.raises(DataError, match="refused: (link|device)"):
        submit(hostile, tmp_path / "board", data=board_prepared)
    assert _board_files(tmp_path / "board") == []


def test_size_limits_are_enforced(bundle, board_prepared, tmp_path):
    with pytest.raises(DataError, match="per-file limit of 100"):
        submit(bundle, tmp_path / "board", data=board_prepared, limits=Limits(max_file_bytes=100))
    with pytest.raises(DataError, match="more than 10 archive members"):
        submit(bundle, tmp_path / "board", data=board_prepared, limits=Limits(max_files=10))
    with pytest.raises(DataError, match="the bundle has .* bytes, more than the limit"):
        submit(bundle, tmp_path / "board", data=board_prepared, limits=Limits(max_bundle_bytes=1000))
    assert _board_files(tmp_path / "board") == []


def _edit_jsonl(m, name, fn):
    lines = [json.loads(x) for x in m[name].decode().splitlines()]
    m[name] = "".join(json.dumps(x) + "\n" for x in fn(lines)).encode()
    sub = json.loads(m["submission.json"])
    import hashlib
    for f in sub["files"]:                       # a consistent manifest: the coverage check must catch it
        if f["path"] == name:
            f.update(sha256=hashlib.sha256(m[name]).hexdigest(), bytes=len(m[name]), rows=len(fn(lines)))
    m["submission.json"] = json.dumps(sub).encode()


@pytest.mark.parametrize("fn, message", [
    (lambda lines: lines[1:], "1 missing id(s), e.g. gqa/test/"),
    (lambda lines: lines + [{"uid": "gqa/test/nope", "prediction": "x"}], "1 extra (not in the board's references) id(s), e.g. gqa/test/nope"),
    (lambda lines: lines + lines[:1], "1 duplicate id(s)"),
    (lambda lines: [{**lines[0], "prediction": None}] + lines[1:], "`text` is null"),   # compat refuses the cell
])
def test_missing_extra_or_duplicate_ids_are_refused(bundle, board_prepared, tmp_path, fn, message):
    bad = _repack(bundle, tmp_path / "b.tar.gz", lambda m: _edit_jsonl(m, "predictions/5/gqa.jsonl", fn))
    with pytest.raises(DataError, match=re.escape(message)) as exc:
        submit(bad, tmp_path / "board", data=board_prepared)
    assert "predictions/5/gqa.jsonl" in str(exc.value)
    assert _board_files(tmp_path / "board") == []


def test_missing_required_cell_and_unlisted_file_are_refused(bundle, board_prepared, tmp_path):
    def drop(m):
        del m["predictions/6/vizwiz.jsonl"]
        sub = json.loads(m["submission.json"])
        sub["files"] = [f for f in sub["files"] if f["path"] != "predictions/6/vizwiz.jsonl"]
        m["submission.json"] = json.dumps(sub).encode()
    with pytest.raises(DataError, match=r"1 prediction file\(s\) .* missing: predictions/6/vizwiz.jsonl"):
        submit(_repack(bundle, tmp_path / "a.tar.gz", drop), tmp_path / "board", data=board_prepared)
    with pytest.raises(DataError, match="member 'predictions/6/extra.jsonl' is not listed in submission.json"):
        submit(_repack(bundle, tmp_path / "b.tar.gz", lambda m: m.update({"predictions/6/extra.jsonl": b"{}\n"})),
               tmp_path / "board", data=board_prepared)
    assert _board_files(tmp_path / "board") == []


def test_unknown_schema_version_and_unsafe_links_are_refused(bundle, board_prepared, tmp_path):
    def version(m):
        sub = json.loads(m["submission.json"])
        sub["schema_version"] = 99
        m["submission.json"] = json.dumps(sub).encode()
    with pytest.raises(SchemaVersionError, match="unknown submission schema_version 99"):
        submit(_repack(bundle, tmp_path / "v.tar.gz", version), tmp_path / "board", data=board_prepared)

    def js_link(m):
        sub = json.loads(m["submission.json"])
        sub["meta"]["links"]["paper"] = "javascript:alert(1)"
        m["submission.json"] = json.dumps(sub).encode()
    with pytest.raises(DataError) as exc:
        submit(_repack(bundle, tmp_path / "j.tar.gz", js_link), tmp_path / "board", data=board_prepared)
    assert exc.value.field == "meta.links.paper"
    assert _board_files(tmp_path / "board") == []


def test_wrong_template_set_references_are_refused(bundle, tmp_path_factory, tmp_path):
    five = make_prepared(tmp_path_factory.mktemp("lb-five"), "five")
    with pytest.raises(DataError, match="template set 'single' but the board's references .* are 'five'"):
        submit(bundle, tmp_path / "board", data=five)


def test_reported_bundle_recomputes_what_the_matrix_allows(run_out, tmp_path):
    b = pack(run_out, {**META, "method": {**META["method"], "name": "paper numbers"}}, tmp_path / "r.tar.gz", reported=True)
    assert set(read_tar(b)) == {"submission.json", "results.json"}
    entry = submit(b, tmp_path / "board").entry
    results = json.loads((run_out / "results.json").read_text())
    assert entry.tier == "reported" and entry.results is not None
    assert entry.summary["AP"] == pytest.approx(results["summary"]["AP"])
    assert entry.summary_status["AP"] == "recomputed" and entry.summary_status["FWT"] == NOT_RECOMPUTABLE


# ------------------------------------------------------------------------------------------------ seeds
def test_seed_entries_are_reported_with_citations_on_their_own_boards(tmp_path):
    entries = seed_board(tmp_path / "board")
    assert len(seed_files()) >= 5 and all(e.tier == "reported" and e.source["citation"] for e in entries)
    by_board: dict[BoardKey, list[Entry]] = {}
    for e in entries:
        by_board.setdefault(e.board, []).append(e)
    single = BoardKey("cvit", "single", "vicuna7b-pretrain", "compat")
    five = BoardKey("cvit", "five", "vicuna7b-pretrain", "compat")
    assert [e.name for e in by_board[single]] == ["Multitask", "Zero-shot", "DirLoRA†", "SeqLoRA", "MoeLoRA", "EWC",
                                                 "Replay", "DoRA", "SMoLoRA"]
    assert len(by_board[five]) == 6
    # 7B vs 13B CoIN and the ICCV-version Eproj row never share a board with the v1 numbers
    assert len(by_board[BoardKey("coin", "original", "llava13b", "compat")]) == 2
    eproj = next(e for e in entries if e.name == "Eproj")
    assert eproj.board != single and eproj.grade == "secondhand"
    smo = next(e for e in by_board[single] if e.name == "SMoLoRA")
    assert smo.final_row["flickr30k"] == 151.99 and smo.summary == {"AP": 83.44, "MAP": 84.85, "BWT": -3.23, "MIF": 97.79}
    assert smo.summary_status["MAP"] == NOT_RECOMPUTABLE and smo.flags == []
    # AP checked against the mean of the printed task values (docs/published-results.md, CVIT caveats)
    flagged = {(e.board.template_set, e.name) for e in entries if e.flags}
    assert flagged == {("single", "SeqLoRA"), ("five", "EWC")}
    assert [e.kind for e in by_board[single][:3]] == ["reference"] * 3
    assert len({e.id for e in entries}) == len(entries)
    seed_board(tmp_path / "board")                      # idempotent
    assert len(read_entries(tmp_path / "board")) == len(entries)


# ------------------------------------------------------------------------------------------------ site
def _evil_entry() -> Entry:
    return Entry(id="evil-0001", tier="rescored", kind="method",
                 board=BoardKey("cvit", "single", "vicuna7b-pretrain", "compat"),
                 method={"name": "<script>alert(1)</script>", "family": "other", "description": "<b>bold</b>"},
                 base_model={"name": "vicuna7b-pretrain", "revision": "x"}, tasks=["scienceqa"],
                 final_row={"scienceqa": 50.0}, summary={"AP": 50.0}, summary_status={"AP": "recomputed"},
                 links={"paper": "javascript:alert(2)", "code": "https://example.org/code"}, contact="<img src=x>")


def test_site_tables_never_mix_boards_and_escape_everything(bundle, board_prepared, tmp_path):
    board = tmp_path / "board"
    submit(bundle, board, data=board_prepared)
    seed_board(board)
    write_entry(board, _evil_entry())             # a board file edited by hand: the site must still be inert
    site = build_site(board, tmp_path / "site")
    html = site.index.read_text()
    entries = read_entries(board)
    assert len(site.pages) == len(entries)
    boards = {e.board for e in entries}
    assert html.count('<table class="board num"') == len(boards)
    assert 'http-equiv="Content-Security-Policy"' in html and "default-src &#39;none&#39;" in html
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="static/board.js" defer>']
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript:' not in html and "paper: javascript:alert(2)" in html
    assert 'href="https://example.org/code"' in html
    # the rescored tiny-llava entry is on its own board, first; reported rows are in their own sections
    first_table = html[html.index('<table class="board num"'):html.index("</table>")]
    assert "Seq-LoRA (test)" in first_table and "SMoLoRA" not in first_table
    single = html[html.index('data-board="cvit-single--vicuna7b-pretrain--compat"'):]
    single = single[:single.index("</table>")]
    assert single.index('data-section="rescored"') < single.index('data-section="reported"') < single.index('data-section="reference"')
    assert "secondhand" not in single                                # primary-only board
    assert 'data-mark="nr"' in single and 'data-mark="⚑"' in single
    page = (tmp_path / "site" / "entries" / "evil-0001.html").read_text()
    assert "<script>alert" not in page and "<img src=x>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert (tmp_path / "site" / "static" / "board.js").is_file() and (tmp_path / "site" / ".nojekyll").is_file()
    rescored = next(e for e in entries if e.tier == "rescored" and e.results)
    rpage = (tmp_path / "site" / "entries" / f"{rescored.id}.html").read_text()
    assert f'<img src="{rescored.id}/heatmap.svg"' in rpage and (tmp_path / "site" / "entries" / rescored.id / "heatmap.svg").is_file()
    assert "How to submit" in html and "cvit-bench leaderboard pack RUN_OUT --meta meta.yaml --out bundle.tar.gz" in html


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_pack_submit_seed_build(run_out, board_prepared, tmp_path):
    import yaml
    (tmp_path / "meta.yaml").write_text(yaml.safe_dump(META))
    runner = CliRunner()
    r = runner.invoke(main, ["leaderboard", "pack", str(run_out), "--meta", str(tmp_path / "meta.yaml"),
                             "--out", str(tmp_path / "b.tar.gz")])
    assert r.exit_code == 0, r.output
    board = tmp_path / "board"
    r = runner.invoke(main, ["leaderboard", "submit", str(tmp_path / "b.tar.gz"), "--board", str(board),
                             "--data", str(board_prepared)])
    assert r.exit_code == 0 and "added rescored entry" in r.output, r.output
    r = runner.invoke(main, ["leaderboard", "submit", str(tmp_path / "b.tar.gz"), "--board", str(board),
                             "--data", str(board_prepared), "--max-file-mb", "0.00001"])
    assert r.exit_code == 2 and "per-file limit" in r.output
    assert runner.invoke(main, ["leaderboard", "seed", "--board", str(board)]).exit_code == 0
    r = runner.invoke(main, ["leaderboard", "build", "--board", str(board), "--out", str(tmp_path / "site")])
    assert r.exit_code == 0 and (tmp_path / "site" / "index.html").is_file(), r.output
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**META, "links": {"paper": "javascript:x"}}))
    r = runner.invoke(main, ["leaderboard", "pack", str(run_out), "--meta", str(tmp_path / "bad.yaml"),
                             "--out", str(tmp_path / "x.tar.gz")])
    assert r.exit_code == 2 and "links.paper" in r.output and not (tmp_path / "x.tar.gz").exists()


def test_results_naming_a_benchmark_path_or_a_broken_matrix_are_refused(bundle, run_out, board_prepared, tmp_path):
    def path_id(m):
        results = json.loads(m["results.json"])
        results["benchmark"]["id"] = str(tmp_path / "evil.yaml")
        m["results.json"] = json.dumps(results).encode()
        sub = json.loads(m["submission.json"])
        import hashlib
        for f in sub["files"]:
            if f["path"] == "results.json":
                f.update(sha256=hashlib.sha256(m["results.json"]).hexdigest(), bytes=len(m["results.json"]))
        m["submission.json"] = json.dumps(sub).encode()
    with pytest.raises(DataError, match="does not match the results.json schema") as exc:
        submit(_repack(bundle, tmp_path / "p.tar.gz", path_id), tmp_path / "board", data=board_prepared)
    assert exc.value.field == "benchmark.id" and exc.value.file == f"{tmp_path / 'p.tar.gz'}:results.json"
    broken = tmp_path / "broken"
    broken.mkdir()
    results = json.loads((run_out / "results.json").read_text())
    results["matrix"]["values"][2][0] = "NaN"
    (broken / "results.json").write_text(json.dumps(results))
    with pytest.raises(DataError, match="'NaN' is not of type") as exc:
        submit(pack(broken, META, tmp_path / "r.tar.gz", reported=True), tmp_path / "board")
    assert exc.value.field == "matrix.values.2.0"
    assert _board_files(tmp_path / "board") == []


def test_reference_run_kinds_require_only_their_rows():
    from cvit_bench.benchmark import load_benchmark
    from cvit_bench.errors import DataError

    spec = load_benchmark("cvit")
    full = required_cells(spec)
    assert len(full) == 21 + 3 and ("1", "scienceqa") in full
    assert required_cells(spec, "multitask") == [("6", t) for t in spec.upstream] + [("6", "vizwiz"), ("6", "textcaps"), ("6", "ocrvqa")]
    assert required_cells(spec, "zero-shot") == [("0", t) for t in spec.upstream]
    assert required_cells(spec, "independent") == full
    with pytest.raises(DataError, match="run_kind"):
        required_cells(spec, "magic")
