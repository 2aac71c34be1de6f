"""Hostile input against the leaderboard (issue 14): every refusal is exit 2 with a message that names the
user's file (bundle and member, field), and leaves the board, the site and the out folder byte for byte as
they were. Archives are built here; crashes are real ``os._exit`` calls in subprocesses; concurrency is real
parallel processes.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from cvit_bench.leaderboard.board import Submitter, read_entries
from cvit_bench.leaderboard.bundle import count_rows, pack
from cli_helpers import assert_refused, cli, snapshot
from leaderboard_fixtures import META, read_tar, write_tar, zero_file_tar_gz

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reported(run_out, tmp_path_factory) -> Path:
    return pack(run_out, META, tmp_path_factory.mktemp("bi-rep") / "reported.tar.gz", reported=True)


def rebundle(src: Path, dst: Path, *, results: Callable[[dict], Any] | None = None, raw_results: bytes | None = None,
             meta: dict | None = None, members: Callable[[dict[str, bytes]], None] | None = None,
             relist: bool = True) -> Path:
    """``src`` with edits, submission.json's hashes/sizes/rows recomputed (so only the edit itself is hostile)."""
    m = read_tar(src)
    if results is not None:
        doc = json.loads(m["results.json"])
        results(doc)
        m["results.json"] = json.dumps(doc).encode()          # json.dumps writes NaN/Infinity as given
    if raw_results is not None:
        m["results.json"] = raw_results
    if members is not None:
        members(m)
    sub = json.loads(m["submission.json"])
    if meta is not None:
        sub["meta"] = meta
    if relist:
        for f in sub["files"]:
            if f["path"] in m:
                data = m[f["path"]]
                f.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data),
                         rows=None if f["path"] == "results.json" else count_rows(data))
    m["submission.json"] = json.dumps(sub).encode()
    ordered = {"submission.json": m.pop("submission.json"), **m}
    return write_tar(dst, ordered)


def submit_cli(bundle_path: Path, board: Path, board_prepared: Path | None = None, *extra: str):
    args = ["leaderboard", "submit", bundle_path, "--board", board]
    if board_prepared is not None:
        args += ["--data", board_prepared]
    return cli(*args, *extra)


# ------------------------------------------------------------------------------------ 1: refusal writes nothing
@pytest.mark.parametrize("where", ["provenance", "method", "generation"])
def test_nan_in_results_is_refused_and_the_stored_bundle_is_untouched(bundle, board_prepared, tmp_path, where):
    board = tmp_path / "board"
    assert submit_cli(bundle, board, board_prepared).exit_code == 0
    before = snapshot(board)

    def add_nan(doc):
        doc[where] = {**(doc.get(where) or {}), "x": float("nan")}
    hostile = rebundle(bundle, tmp_path / "nan.tar.gz", results=add_nan)
    r = submit_cli(hostile, board, board_prepared)
    assert_refused(r, f"{hostile}:results.json", "NaN is not a finite number")
    assert snapshot(board) == before
    # a new method name: still nothing written (no orphan bundle)
    renamed = rebundle(hostile, tmp_path / "nan2.tar.gz", meta={**META, "method": {**META["method"], "name": "Other"}})
    assert_refused(submit_cli(renamed, board, board_prepared), "NaN is not a finite number")
    assert snapshot(board) == before


def test_overflowing_number_and_schema_version_true_are_refused(reported, tmp_path):
    board = tmp_path / "board"
    text = read_tar(reported)["results.json"].replace(b'"schema_version": 1', b'"schema_version": 1, "warnings": [], "x": 1e309', 1)
    assert b"1e309" in text
    r = submit_cli(rebundle(reported, tmp_path / "o.tar.gz", raw_results=text), board)
    assert_refused(r, "o.tar.gz:results.json", "1e309 is not a finite number")
    r = submit_cli(rebundle(reported, tmp_path / "v.tar.gz", results=lambda d: d.update(schema_version=True)), board)
    assert_refused(r, "unknown results schema_version True")
    assert snapshot(board) == {}


# ------------------------------------------------------------------------------------ 2: ownership and history
def _worse(m):
    m["predictions/6/vqav2.jsonl"] = m["predictions/6/vqav2.jsonl"].replace(b'"prediction": "', b'"prediction": "no', 1)


def test_an_entry_belongs_to_its_submitter_and_force_keeps_history(bundle, board_prepared, run_out, tmp_path):
    board = tmp_path / "board"
    assert submit_cli(bundle, board, board_prepared, "--owner", META["contact"]).exit_code == 0
    victim = read_entries(board)[0]
    assert victim.submitter == Submitter("contact", META["contact"])
    before = snapshot(board)
    # same method name, same (unchecked) checkpoint hashes, worse predictions, another owner
    attacker_meta = {**META, "contact": "attacker@example.org"}
    hostile = rebundle(bundle, tmp_path / "a.tar.gz", meta=attacker_meta, members=_worse)
    r = submit_cli(hostile, board, board_prepared, "--owner", "attacker@example.org")
    assert_refused(r, str(hostile), f"entry {victim.id}", "belongs to contact someone@example.org", "--force")
    assert snapshot(board) == before
    # the maintainer forces it: the victim's version stays in the history with its bundle and dates
    r = submit_cli(hostile, board, board_prepared, "--owner", "attacker@example.org", "--force")
    assert r.exit_code == 0, r.output
    [entry] = read_entries(board)
    assert entry.submitter == Submitter("contact", "attacker@example.org")
    assert [h["bundle_sha256"] for h in entry.history] == [victim.bundle_sha256]
    assert entry.history[0]["submitter"] == {"kind": "contact", "id": META["contact"]}
    assert entry.history[0]["submitted_utc"] == victim.submitted_utc and entry.history[0]["replaced_utc"]
    assert entry.history[0]["forced"] is True
    assert entry.history[0]["replaced_by"] == {"kind": "contact", "id": "attacker@example.org"}
    for sha in (victim.bundle_sha256, entry.bundle_sha256):
        assert hashlib.sha256((board / "submissions/bundles" / f"{sha}.tar.gz").read_bytes()).hexdigest() == sha
    assert (board / "submissions/bundles" / f"{victim.bundle_sha256}.tar.gz").read_bytes() == bundle.read_bytes()
    # the entry page says the replacement was forced
    assert cli("leaderboard", "build", "--board", board, "--out", tmp_path / "site").exit_code == 0
    assert "by the maintainer over its owner (--force)" in (tmp_path / "site/entries" / f"{entry.id}.html").read_text()


VICTIM = "someone@example.org"
TAKEOVER_CONTACTS = {
    "same": VICTIM,
    "case": "SomeOne@Example.ORG",
    "spaces": f"  {VICTIM}\t ",
    "fullwidth": "ｓｏｍｅｏｎｅ＠ｅｘａｍｐｌｅ．ｏｒｇ",
    "zero-width": "some\u200bone@example.org",
}


@pytest.mark.parametrize("variant", list(TAKEOVER_CONTACTS))
def test_a_bundle_repeating_the_owners_contact_does_not_take_the_entry_over(bundle, board_prepared, tmp_path, variant):
    board = tmp_path / "board"
    assert submit_cli(bundle, board, board_prepared, "--owner", VICTIM).exit_code == 0
    [victim] = read_entries(board)
    before = snapshot(board)
    hostile = rebundle(bundle, tmp_path / "h.tar.gz", meta={**META, "contact": TAKEOVER_CONTACTS[variant]}, members=_worse)
    # without --owner the bundle's contact is only a claim: it never replaces an entry
    assert_refused(submit_cli(hostile, board, board_prepared), str(hostile), f"entry {victim.id}",
                   f"belongs to contact {VICTIM}", "not proof of identity", "--owner")
    # the maintainer names the sender they checked: someone else, whatever the bundle's contact says
    assert_refused(submit_cli(hostile, board, board_prepared, "--owner", "mallory@example.org"), str(hostile),
                   f"entry {victim.id}", f"belongs to contact {VICTIM}", "not to contact mallory@example.org")
    assert snapshot(board) == before


@pytest.mark.parametrize("variant", ["case", "spaces", "fullwidth", "zero-width"])
def test_the_owner_is_compared_normalised_and_their_resubmission_replaces_with_history(bundle, board_prepared,
                                                                                       tmp_path, variant):
    board = tmp_path / "board"
    assert submit_cli(bundle, board, board_prepared, "--owner", VICTIM).exit_code == 0
    [first] = read_entries(board)
    again = rebundle(bundle, tmp_path / "again.tar.gz", members=_worse)
    r = submit_cli(again, board, board_prepared, "--owner", TAKEOVER_CONTACTS[variant])
    assert r.exit_code == 0 and "replaced" in r.output, r.output
    [entry] = read_entries(board)
    assert entry.submitter == Submitter("contact", VICTIM) and entry.bundle_sha256 != first.bundle_sha256
    assert [h["bundle_sha256"] for h in entry.history] == [first.bundle_sha256]
    assert entry.history[0]["forced"] is False


def test_a_version_1_entry_is_owned_by_its_normalised_contact(bundle, board_prepared, tmp_path):
    board = tmp_path / "board"
    assert submit_cli(bundle, board, board_prepared, "--owner", VICTIM).exit_code == 0
    [path] = (board / "submissions").glob("*.json")
    old = json.loads(path.read_text())
    old.update(schema_version=1, contact="  SomeOne@Example.org ")
    del old["submitter"], old["history"]
    path.write_text(json.dumps(old))
    hostile = rebundle(bundle, tmp_path / "h.tar.gz", members=_worse)
    assert_refused(submit_cli(hostile, board, board_prepared, "--owner", "mallory@example.org"),
                   f"belongs to contact {VICTIM}")
    assert submit_cli(hostile, board, board_prepared, "--owner", VICTIM).exit_code == 0
    [entry] = read_entries(board)
    assert entry.history[0]["submitter"] == {"kind": "contact", "id": VICTIM} and entry.history[0]["schema_version"] == 2


def test_a_bundle_without_owner_still_adds_a_new_entry_owned_by_its_contact(bundle, board_prepared, tmp_path):
    board = tmp_path / "board"
    spaced = rebundle(bundle, tmp_path / "s.tar.gz", meta={**META, "contact": " SomeOne@Example.org "})
    assert submit_cli(spaced, board, board_prepared).exit_code == 0
    [entry] = read_entries(board)
    assert entry.submitter == Submitter("contact", VICTIM) and entry.contact == " SomeOne@Example.org "
    assert_refused(submit_cli(bundle, board, board_prepared, "--owner", "  "), "--owner")


def test_submitter_tokens_are_distinct_owners(bundle, board_prepared, tmp_path):
    from cvit_bench.errors import CvitError
    from cvit_bench.leaderboard.board import OwnershipError
    from cvit_bench.leaderboard.submit import submit

    board = tmp_path / "board"
    submit(bundle, board, data=board_prepared, submitter=Submitter("token", "tok-1"))
    with pytest.raises(OwnershipError, match="belongs to token tok-1"):
        submit(bundle, board, data=board_prepared, owner=META["contact"])      # the same contact is not the token's owner
    with pytest.raises(OwnershipError, match="not proof of identity"):
        submit(bundle, board, data=board_prepared)
    assert issubclass(OwnershipError, CvitError)
    again = submit(bundle, board, data=board_prepared, submitter=Submitter("token", "tok-1"))
    assert again.replaced and len(again.entry.history) == 1


# ------------------------------------------------------------------------------------ 3: the whole results.json
RESULT_VARIANTS = [
    ("cells", lambda d: d.update(cells=[1, 2]), "field 'cells'"),
    ("warnings", lambda d: d.update(warnings=5), "field 'warnings'"),
    ("downstream", lambda d: d["downstream"]["vizwiz"].update(value="abc"), "field 'downstream.vizwiz.value'"),
    ("generation", lambda d: d.update(generation=[1, 2]), "field 'generation'"),
    ("summary", lambda d: d["summary"].update(AP="high"), "field 'summary.AP'"),
    ("matrix-string", lambda d: d.update(matrix="1,2"), "field 'matrix'"),
    ("matrix-ragged", lambda d: d["matrix"]["values"][0].append(1.0), "field 'matrix.values'"),
    ("negative", lambda d: d["matrix"]["values"][0].__setitem__(0, -5.0), "field 'matrix.values.0.0'"),
    ("if-rate", lambda d: d["if_rates"]["values"][0].__setitem__(0, 250.0), "field 'if_rates.values.0.0'"),
    ("stage-label", lambda d: d["stages"].append({"label": "<script>", "kind": "upstream"}), "field 'stages.6.label'"),
    ("unknown-key", lambda d: d.update(surprise={}), "Additional properties are not allowed"),
    ("metrics-short", lambda d: d["matrix"].update(metrics=["x"]), "field 'matrix.metrics'"),
]


@pytest.mark.parametrize("tier", ["reported", "rescored"])
@pytest.mark.parametrize("name, edit, needle", RESULT_VARIANTS, ids=[v[0] for v in RESULT_VARIANTS])
def test_every_results_field_is_validated_at_submit(bundle, reported, board_prepared, tmp_path, tier, name, edit, needle):
    board = tmp_path / "board"
    src = bundle if tier == "rescored" else reported
    hostile = rebundle(src, tmp_path / f"{name}.tar.gz", results=edit)
    r = submit_cli(hostile, board, board_prepared if tier == "rescored" else None)
    assert_refused(r, f"{hostile}:results.json", needle)
    assert snapshot(board) == {}


def test_pack_refuses_what_the_board_would_refuse(run_out, tmp_path):
    bad = tmp_path / "run"
    bad.mkdir()
    results = json.loads((run_out / "results.json").read_text())
    results["generation"] = [1, 2]
    (bad / "results.json").write_text(json.dumps(results))
    (tmp_path / "meta.yaml").write_text(yaml.safe_dump(META))
    r = cli("leaderboard", "pack", bad, "--meta", tmp_path / "meta.yaml", "--out", tmp_path / "b.tar.gz", "--reported")
    assert_refused(r, str(bad / "results.json"), "field 'generation'")
    assert not (tmp_path / "b.tar.gz").exists()


# ------------------------------------------------------------------------------------ 4: archives
def _with_member(name: str, data: bytes = b"{}\n") -> Callable[[dict[str, bytes]], None]:
    return lambda m: m.update({name: data})


@pytest.mark.parametrize("label, edit, needles", [
    ("clash", _with_member("results.json/x.jsonl"), ["member 'results.json/x.jsonl' is not listed in submission.json"]),
    ("long-name", _with_member("predictions/6/" + "a" * 300 + ".jsonl"), ["is not listed in submission.json"]),
    ("control-chars", _with_member("predictions/6/\x1b[31mred\nline.jsonl"), ["\\x1b[31mred\\nline.jsonl"]),
])
def test_unlisted_members_are_refused_at_their_header(bundle, board_prepared, tmp_path, label, edit, needles):
    board = tmp_path / "board"
    r = submit_cli(rebundle(bundle, tmp_path / f"{label}.tar.gz", members=edit), board, board_prepared)
    assert_refused(r, *needles)
    assert "\x1b" not in r.output and snapshot(board) == {}


def test_folder_named_like_a_file_and_submission_not_first_are_refused(bundle, board_prepared, tmp_path):
    board = tmp_path / "board"
    members = read_tar(bundle)
    folder = tarfile.TarInfo("results.json")
    folder.type = tarfile.DIRTYPE
    hostile = write_tar(tmp_path / "d.tar.gz", {}, extra=[folder])
    assert_refused(submit_cli(hostile, board, board_prepared), "no submission.json in the bundle")
    first = dict(members)
    late = write_tar(tmp_path / "late.tar.gz", {"results.json": first.pop("results.json"), **first})
    assert_refused(submit_cli(late, board, board_prepared), "submission.json must be the first file", "'results.json'")
    assert snapshot(board) == {}


def test_deeply_nested_json_is_refused_with_a_message(bundle, reported, tmp_path):
    board = tmp_path / "board"
    deep = b"[" * 100_000 + b"]" * 100_000
    r = submit_cli(rebundle(reported, tmp_path / "deep.tar.gz", raw_results=deep), board)
    assert_refused(r, "deep.tar.gz:results.json", "nested too deeply")
    m = read_tar(reported)
    m["submission.json"] = b'{"a": ' * 100_000 + b"1" + b"}" * 100_000
    r = submit_cli(write_tar(tmp_path / "deep2.tar.gz", m), board)
    assert_refused(r, "deep2.tar.gz:submission.json", "nested too deeply")
    assert snapshot(board) == {}


def test_non_utf8_predictions_name_the_bundle_and_member(bundle, board_prepared, tmp_path):
    board = tmp_path / "board"
    def latin1(m):
        m["predictions/6/vqav2.jsonl"] = m["predictions/6/vqav2.jsonl"].replace(b'"prediction": "', b'"prediction": "\xff\xfe', 1)
    hostile = rebundle(bundle, tmp_path / "u.tar.gz", members=latin1)
    r = submit_cli(hostile, board, board_prepared)
    assert_refused(r, f"{hostile}:predictions/6/vqav2.jsonl", "record line 1", "not UTF-8")
    assert "cvit-bundle-" not in r.output                       # never the deleted temporary folder
    assert snapshot(board) == {}


def test_inflating_bundle_is_refused_fast_with_bounded_memory(reported, tmp_path):
    members = read_tar(reported)
    listed = {"submission.json": members["submission.json"], "results.json": members["results.json"]}
    # the generator writes valid archives (checked whole on a small one) ...
    small = zero_file_tar_gz(tmp_path / "small.tar.gz", listed, [("predictions/1/zero.jsonl", 4 << 20)])
    assert {k: len(v) for k, v in read_tar(small).items()} == {**{k: len(v) for k, v in listed.items()},
                                                              "predictions/1/zero.jsonl": 4 << 20}
    # ... and the case: 7 unlisted 250 MiB files of zeros in a bundle of under 2 MB
    bomb = zero_file_tar_gz(tmp_path / "bomb.tar.gz", listed, [(f"predictions/1/zero{i}.jsonl", 250 << 20) for i in range(7)])
    assert bomb.stat().st_size < 2 << 20
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    script = (
        "import resource, sys, time\n"
        "from cvit_bench.errors import DataError\n"
        "from cvit_bench.leaderboard.submit import submit\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    submit(sys.argv[1], sys.argv[2])\n"
        "except DataError as exc:\n"
        "    print('REFUSED', exc)\n"
        "print('SECONDS', time.perf_counter() - t)\n"
        "print('PEAK_MB', (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n"
    )
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.run([sys.executable, "-c", script, str(bomb), str(tmp_path / "board")], capture_output=True,
                          text=True, env=env, timeout=120)
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert "is not listed in submission.json" in lines["REFUSED"] and "zero0.jsonl" in lines["REFUSED"], proc.stdout
    assert float(lines["SECONDS"]) < 5.0
    assert float(lines["PEAK_MB"]) < 100                     # above what the imports took
    assert list(scratch.iterdir()) == [] and not (tmp_path / "board").exists()


def test_listed_files_over_the_limits_are_refused_before_extraction(bundle, board_prepared, tmp_path):
    def huge(sub):
        sub["files"][0]["bytes"] = 300 << 20
    m = read_tar(bundle)
    sub = json.loads(m["submission.json"])
    huge(sub)
    m["submission.json"] = json.dumps(sub).encode()
    r = submit_cli(write_tar(tmp_path / "h.tar.gz", m), tmp_path / "board", board_prepared)
    assert_refused(r, "h.tar.gz:submission.json", "more than the per-file limit")


# ------------------------------------------------------------------------------------ method names
@pytest.mark.parametrize("name, needle", [
    ("S\u0435q-LoRA", "mixes letters of the Cyrillic and Latin scripts"),          # Cyrillic е
    ("Seq-LoRA\u202e", "bidirectional control character U+202E"),
    ("Seq\u200b-LoRA", "invisible or control character U+200B"),
    ("\u3000 \u3000", "must not be empty or blank"),             # ideographic spaces: blank after NFKC
    ("\u2063", "invisible or control character U+2063"),
])
def test_lookalike_invisible_and_bidi_method_names_are_refused(run_out, tmp_path, name, needle):
    (tmp_path / "meta.yaml").write_text(yaml.safe_dump({**META, "method": {**META["method"], "name": name}}))
    r = cli("leaderboard", "pack", run_out, "--meta", tmp_path / "meta.yaml", "--out", tmp_path / "b.tar.gz", "--reported")
    assert_refused(r, "field 'method.name'", needle)
    assert not (tmp_path / "b.tar.gz").exists()


def test_method_names_are_nfkc_normalised_and_hand_made_bundles_checked(reported, tmp_path):
    fullwidth = {**META, "method": {**META["method"], "name": "Ｓｅｑ-ＬｏＲＡ"}}
    r = submit_cli(rebundle(reported, tmp_path / "f.tar.gz", meta=fullwidth), tmp_path / "board")
    assert r.exit_code == 0, r.output
    assert [e.name for e in read_entries(tmp_path / "board")] == ["Seq-LoRA"]
    cyrillic = {**META, "method": {**META["method"], "name": "S\u0435q-LoRA"}}
    r = submit_cli(rebundle(reported, tmp_path / "c.tar.gz", meta=cyrillic), tmp_path / "board2")
    assert_refused(r, "c.tar.gz:submission.json", "field 'method.name'", "Cyrillic")


# ------------------------------------------------------------------------------------ concurrency
def test_parallel_submissions_are_serialised_by_the_board_lock(reported, tmp_path):
    board = tmp_path / "board"
    bundles = []
    for i in range(4):
        bundles.append(rebundle(reported, tmp_path / f"p{i}.tar.gz",
                                meta={**META, "method": {**META["method"], "name": f"Method {i % 2}"}},
                                results=lambda d, i=i: d.setdefault("provenance", {}).update(run=i)))
    procs = [subprocess.Popen([sys.executable, "-m", "cvit_bench", "leaderboard", "submit", str(b), "--board", str(board),
                               "--owner", META["contact"]],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for b in bundles]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    entries = {e.name: e for e in read_entries(board)}
    assert sorted(entries) == ["Method 0", "Method 1"]
    for e in entries.values():       # two submissions per entry: one current, one in the history, none lost
        shas = {e.bundle_sha256, *(h["bundle_sha256"] for h in e.history)}
        assert len(e.history) == 1 and len(shas) == 2
        for sha in shas:
            assert (board / "submissions/bundles" / f"{sha}.tar.gz").is_file()
    assert len(list((board / "submissions/bundles").iterdir())) == 4
    assert not [p for p in (board / "submissions").rglob("*.tmp")]


# ------------------------------------------------------------------------------------ build
def _hand_entry(board: Path, eid: str, **changes) -> None:
    base = read_entries(board)[0].to_dict()
    base.update(id=eid)
    base.update(changes)
    (board / "submissions" / f"{eid}.json").write_text(json.dumps(base))


def test_build_swaps_the_whole_site_and_drops_pages_of_gone_entries(reported, tmp_path):
    board, site = tmp_path / "board", tmp_path / "site"
    assert submit_cli(reported, board).exit_code == 0
    _hand_entry(board, "second-entry", method={**META["method"], "name": "Second"})
    assert cli("leaderboard", "build", "--board", board, "--out", site).exit_code == 0
    assert (site / "entries/second-entry.html").is_file()
    (board / "submissions/second-entry.json").unlink()
    assert cli("leaderboard", "build", "--board", board, "--out", site).exit_code == 0
    assert not (site / "entries/second-entry.html").exists()
    assert "second-entry" not in (site / "index.html").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site.")]      # no staging folder left


def test_build_that_fails_leaves_the_live_site_identical(reported, tmp_path):
    board, site = tmp_path / "board", tmp_path / "site"
    assert submit_cli(reported, board).exit_code == 0
    assert cli("leaderboard", "build", "--board", board, "--out", site).exit_code == 0
    before = snapshot(site)
    (board / "submissions/broken.json").write_text('{"schema_version": 2, "id": ')
    r = cli("leaderboard", "build", "--board", board, "--out", site)
    assert_refused(r, "broken.json", "malformed JSON")
    assert snapshot(site) == before


WRONG_TYPED_FIELDS = [("method", "Seq"), ("final_row", [1]), ("summary", None), ("summary_status", "x"),
                      ("links", "https://x"), ("flags", 5), ("tasks", None), ("source", "paper"), ("seed", [1]),
                      ("id", {"a": 1}), ("trainable_params", "7B"), ("history", [1])]


@pytest.mark.parametrize("field, value", WRONG_TYPED_FIELDS, ids=[f for f, _ in WRONG_TYPED_FIELDS])
def test_build_refuses_an_entry_with_a_wrong_typed_field_naming_file_and_field(reported, tmp_path, field, value):
    """A board file edited by hand with a field of the wrong type: exit 2 naming the entry file and the field, the
    live site untouched (was an AttributeError or TypeError traceback)."""
    board, site = tmp_path / "board", tmp_path / "site"
    assert submit_cli(reported, board).exit_code == 0
    assert cli("leaderboard", "build", "--board", board, "--out", site).exit_code == 0
    before = snapshot(site)
    _hand_entry(board, "zz-hand", **{field: value})
    assert_refused(cli("leaderboard", "build", "--board", board, "--out", site),
                   str(board / "submissions/zz-hand.json"), f"field '{field}'", "must be")
    assert snapshot(site) == before


def test_an_entry_that_cannot_render_is_reported_never_half_published(reported, tmp_path):
    board, site = tmp_path / "board", tmp_path / "site"
    assert submit_cli(reported, board).exit_code == 0
    _hand_entry(board, "zz-unrenderable", method={**META["method"], "name": "Broken"},
                results={"matrix": "not a matrix"})
    r = cli("leaderboard", "build", "--board", board, "--out", site)
    assert r.exit_code == 0, r.output
    assert "entry zz-unrenderable left out of the site" in r.output
    index = (site / "index.html").read_text()
    assert "zz-unrenderable" not in index and "Broken" not in index
    assert not (site / "entries/zz-unrenderable.html").exists() and not (site / "entries/zz-unrenderable").exists()
    assert len(list((site / "entries").glob("*.html"))) == 1


def test_build_refuses_to_replace_a_folder_that_is_not_a_site(reported, tmp_path):
    board, site = tmp_path / "board", tmp_path / "mine"
    assert submit_cli(reported, board).exit_code == 0
    site.mkdir()
    (site / "thesis.tex").write_text("keep me")
    r = cli("leaderboard", "build", "--board", board, "--out", site)
    assert_refused(r, str(site), "not a site built by")
    assert snapshot(site) == {"thesis.tex": b"keep me"}


ODD_BUT_VALID = {
    "minimal": lambda d: [d.pop(k) for k in list(d) if k not in ("schema_version", "benchmark", "matrix", "summary")],
    "cells-odd": lambda d: d.update(cells={"1/scienceqa": {"value": None, "metric": "<b>m</b>", "extras": {"a": [1, {"b": None}]},
                                                               "paired_vs_final": {"z": 1}}}),
    "downstream-min": lambda d: d.update(downstream={"vizwiz": {"value": None}}),
    "method-null": lambda d: d.update(method=None, base_model=None, stages=[]),
    "summary-extra": lambda d: d["summary"].update(ZZ=5),
    "provenance-html": lambda d: d.update(provenance={"x": [[[]]], "y": "<script>alert(1)</script>"}),
}


def test_every_accepted_results_renders(reported, tmp_path):
    """What the schema accepts, the site renders: no accepted bundle can break `build`."""
    board, site = tmp_path / "board", tmp_path / "site"
    for name, edit in ODD_BUT_VALID.items():
        meta = {**META, "method": {**META["method"], "name": name}}
        r = submit_cli(rebundle(reported, tmp_path / f"{name}.tar.gz", results=edit, meta=meta), board)
        assert r.exit_code == 0, (name, r.output)
    r = cli("leaderboard", "build", "--board", board, "--out", site)
    assert r.exit_code == 0 and "left out" not in r.output, r.output
    assert len(list((site / "entries").glob("*.html"))) == len(ODD_BUT_VALID)
    assert "<script>alert(1)" not in "".join(p.read_text() for p in (site / "entries").glob("*.html"))


def test_messages_about_extracted_files_name_the_bundle_not_the_temporary_folder(tmp_path):
    from cvit_bench.errors import CvitError, DataError
    from cvit_bench.leaderboard.bundle import OpenedBundle, bundle_errors

    root = tmp_path / "cvit-bundle-x"
    opened = OpenedBundle(path=Path("up/bundle.tar.gz"), sha256="0" * 64, root=root, submission={})
    with pytest.raises(DataError) as exc, bundle_errors(opened):
        raise DataError("bad line", file=root / "predictions/1/a.jsonl", record="line 2", field="uid")
    assert str(exc.value) == "up/bundle.tar.gz:predictions/1/a.jsonl: record line 2: field 'uid': bad line"
    with pytest.raises(CvitError) as exc, bundle_errors(opened):
        raise CvitError(f"{root / 'predictions/1/a.jsonl'}: no such task")
    assert str(exc.value) == "up/bundle.tar.gz:predictions/1/a.jsonl: no such task"
