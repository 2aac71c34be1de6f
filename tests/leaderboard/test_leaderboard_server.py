"""The submission server end to end over HTTP on 127.0.0.1: real ``leaderboard serve`` / ``worker`` processes,
a real SQLite file, bundles made by ``pack`` (or hostile ones made by hand).

Covers: API upload → 202 + Location → verified + re-scored → awaiting approval (nothing public) → maintainer
approves → row on the rebuilt site; hostile uploads refused with their reasons, board and pages unchanged;
401/413/429; 20 concurrent submissions (two workers, repeated method names) each ending in exactly one final
state; a worker SIGKILLed mid-job and restarted completes the job once; tokens hashed and revocable;
several seeds shown as one row with mean ± 95 % CI.
"""
from __future__ import annotations

import copy
import io
import json
import signal
import sqlite3
import subprocess
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from cvit_bench.cli import main
from cvit_bench.leaderboard.board import read_entries
from cvit_bench.leaderboard.bundle import pack
from leaderboard_fixtures import META, make_run_out, read_tar, write_tar
from server_fixtures import CLI, add_token, run_server, server_env, wait_until

FINAL = ("published", "rejected", "withdrawn")
CHECKED = ("awaiting approval", "rejected")


@pytest.fixture(scope="module")
def world(tmp_path_factory, board_prepared, run_out, bundle):
    """The shared references, run output and bundle (conftest, read-only) and a folder of this module's own."""
    return {"root": tmp_path_factory.mktemp("lb-server"), "prepared": board_prepared, "run": run_out,
            "bundle": bundle}


def _bundle(world, name: str, meta_edit=None) -> bytes:
    meta = copy.deepcopy(META)
    if meta_edit:
        meta_edit(meta)
    out = world["root"] / f"{name}.tar.gz"
    return pack(world["run"], meta, out).read_bytes()


def _snapshot(board: Path) -> dict[str, bytes]:
    """Every public file: the board's entries and the published site."""
    files = {}
    for folder in (board / "submissions", board / "site"):
        if folder.exists():
            files.update({p.relative_to(board).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()})
    return files


def _db(board: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{board / 'server' / 'submissions.sqlite3'}?mode=ro", uri=True, timeout=30)


def _actions(board: Path, sid: str) -> list[str]:
    with _db(board) as con:
        return [r[0] for r in con.execute("select action from actions where submission_id = ? order by id", (sid,))]


# ------------------------------------------------------------------------------------------------ tokens
def test_tokens_are_stored_hashed_listed_and_revocable(tmp_path):
    board = tmp_path / "board"
    token = add_token(board, "alice@example.org")
    raw = (board / "server" / "submissions.sqlite3").read_bytes()
    assert token.encode() not in raw                       # only its hash is stored
    with _db(board) as con:
        assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
    listed = CliRunner().invoke(main, ["leaderboard", "token", "list", "--board", str(board)])
    assert listed.exit_code == 0 and "alice@example.org" in listed.output and token not in listed.output
    revoked = CliRunner().invoke(main, ["leaderboard", "token", "revoke", "1", "--board", str(board)])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    missing = CliRunner().invoke(main, ["leaderboard", "token", "revoke", "9", "--board", str(board)])
    assert missing.exit_code == 2 and "no token #9" in missing.output
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"                  # any SQLAlchemy URL
    added = CliRunner().invoke(main, ["leaderboard", "token", "add", "bob", "--board", str(board), "--db", url])
    assert added.exit_code == 0 and (tmp_path / "elsewhere.db").is_file()
    listed = CliRunner().invoke(main, ["leaderboard", "token", "list", "--board", str(board), "--db", url])
    assert "bob" in listed.output and "alice" not in listed.output


# ------------------------------------------------------------------------------------------------ happy path + hostile
@pytest.fixture(scope="module")
def server(world):
    board = world["root"] / "board"
    tokens = {"alice": add_token(board, "alice@example.org"), "bob": add_token(board, "bob@example.org"),
              "limited": add_token(board, "limited@example.org"), "revoked": add_token(board, "gone@example.org"),
              "maint": add_token(board, "maintainer@example.org", maintainer=True)}
    CliRunner().invoke(main, ["leaderboard", "token", "revoke", "4", "--board", str(board)])
    with run_server(board, world["prepared"], "--rate-limit", "3", "--max-upload-mb", "1", "--lease", "20") as srv:
        yield srv, tokens


def test_api_upload_is_verified_rescored_and_public_only_after_approval(world, server):
    srv, tok = server
    r = srv.upload(world["bundle"].read_bytes(), tok["alice"])
    assert r.status == 202, r.text
    sid = r.json()["id"]
    assert r.headers["location"] == f"/api/submissions/{sid}" and r.json()["state"] == "queued"
    state = srv.wait_state(sid, tok["alice"], CHECKED)
    assert state["state"] == "awaiting approval", state
    eid = state["entry_id"]
    # Nothing public yet: not on the board, not on the pages.
    assert not (srv.board / "submissions" / f"{eid}.json").exists()
    assert "Seq-LoRA (test)" not in srv.request("GET", "/").text
    assert srv.request("GET", f"/entries/{eid}.html").status == 404
    # Another submitter cannot see it or approve it; the owner cannot approve it either.
    assert srv.request("GET", f"/api/submissions/{sid}", token=tok["bob"]).status == 404
    assert srv.request("POST", f"/api/submissions/{sid}/approve", token=tok["alice"]).status == 403
    r = srv.request("POST", f"/api/submissions/{sid}/approve", token=tok["maint"])
    assert r.status == 200 and r.json()["state"] == "published", r.text
    again = srv.request("POST", f"/api/submissions/{sid}/approve", token=tok["maint"])
    assert again.status == 409                                # never published twice
    page = srv.request("GET", "/")
    assert "Seq-LoRA (test)" in page.text and srv.request("GET", f"/entries/{eid}.html").status == 200
    assert "Seq-LoRA (test)" in (srv.board / "site" / "index.html").read_text()
    assert [e.id for e in read_entries(srv.board)] == [eid]
    assert page.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    log = srv.request("GET", "/api/actions", token=tok["maint"]).json()["actions"]
    assert any(a["action"] == "published" and a["actor"].startswith("maintainer@example.org") for a in log)
    # hide → off the pages; unhide → back
    assert srv.request("POST", f"/api/submissions/{sid}/hide", token=tok["maint"]).json()["state"] == "hidden"
    assert "Seq-LoRA (test)" not in srv.request("GET", "/").text and read_entries(srv.board) == []
    assert srv.request("POST", f"/api/submissions/{sid}/unhide", token=tok["maint"]).json()["state"] == "published"
    assert "Seq-LoRA (test)" in srv.request("GET", "/").text


def test_moderation_reject_withdraw_csrf_and_internal_errors(world, server):
    srv, tok = server
    carol = add_token(srv.board, "carol@example.org")
    maint = tok["maint"]
    sids = []
    for i in range(3):
        r = srv.upload(_bundle(world, f"carol{i}", lambda m, i=i: m["method"].update(name=f"Carol {i}")), carol)
        assert r.status == 202, r.text
        sids.append(r.json()["id"])
    for sid in sids:
        assert srv.wait_state(sid, carol, CHECKED)["state"] == "awaiting approval"
    reject, withdraw, broken = sids
    # reject: a note is required and shown to the submitter
    assert srv.request("POST", f"/api/submissions/{reject}/reject", token=maint).status == 400
    r = srv.request("POST", f"/api/submissions/{reject}/reject", token=maint, body=json.dumps({"note": "wrong base <b>"}),
                    headers={"Content-Type": "application/json"})
    assert r.status == 200 and srv.state(reject, carol)["reason"] == "rejected by a maintainer: wrong base <b>"
    assert srv.request("POST", f"/api/submissions/{reject}/approve", token=maint).status == 409
    # withdraw: off the board for good, kept for audit
    assert srv.request("POST", f"/api/submissions/{withdraw}/approve", token=maint).status == 200
    eid = srv.state(withdraw, carol)["entry_id"]
    assert (srv.board / "submissions" / f"{eid}.json").is_file()
    assert srv.request("POST", f"/api/submissions/{withdraw}/withdraw", token=maint).json()["state"] == "withdrawn"
    assert not (srv.board / "submissions" / f"{eid}.json").exists()
    assert (srv.board / "server" / "withdrawn" / f"{eid}.json").is_file()
    assert "Carol 1" not in srv.request("GET", "/").text
    # an internal failure answers 500 without a path or traceback, and the approval is undone
    (srv.board / "server" / "jobs" / broken / "entry.json").write_text("{not json")
    r = srv.request("POST", f"/api/submissions/{broken}/approve", token=maint)
    assert r.status == 500 and "Traceback" not in r.text and str(srv.board) not in r.text, r.text
    assert srv.state(broken, carol)["state"] == "awaiting approval"
    # the same method and checkpoints from another token: an entry belongs to its submitter (#14's ownership)
    dave = add_token(srv.board, "dave@example.org")
    other = srv.upload(world["bundle"].read_bytes(), dave).json()["id"]
    assert srv.wait_state(other, dave, CHECKED)["state"] == "awaiting approval"
    r = srv.request("POST", f"/api/submissions/{other}/approve", token=maint)
    assert r.status == 409 and "belongs to" in r.json()["error"] and str(srv.board) not in r.text, r.text
    assert srv.state(other, dave)["state"] == "awaiting approval"
    # form posts without the CSRF token, or from another site, are refused before anything is stored
    from server_fixtures import multipart
    body, ctype = multipart({"csrf": "forged"}, {"bundle": ("b.tar.gz", world["bundle"].read_bytes())})
    cookies = {"Cookie": f"cvb_token={tok['bob']}; cvb_csrf=real-one", "Content-Type": ctype}
    r = srv.request("POST", "/submit", body=body, headers=cookies)
    assert r.status == 403 and "CSRF" in r.text
    r = srv.request("POST", "/submit", body=body, headers={**cookies, "Origin": "https://evil.example"})
    assert r.status == 403 and "cross-site" in r.text
    r = srv.request("POST", "/api/submissions", body=body, headers=cookies)     # API writes: Bearer only
    assert r.status == 401
    mine = srv.request("GET", "/api/submissions", token=tok["bob"]).json()["submissions"]
    assert all(s["state"] != "uploaded" for s in mine)
    actors = [a["actor"] for a in srv.request("GET", "/api/actions", token=maint).json()["actions"]
              if a["submission"] == reject and a["action"] == "rejected"]
    assert actors == ["maintainer@example.org (maintainer #5)"]


def _hostile_bundles(world) -> dict[str, tuple[bytes, str]]:
    """name → (bundle bytes, the words the refusal must contain)."""
    good = read_tar(world["bundle"])
    d = world["root"] / "hostile"
    d.mkdir(exist_ok=True)

    def tar(name, members, extra=()):
        return write_tar(d / f"{name}.tar.gz", members, list(extra)).read_bytes()

    def info(name, kind, **kw):
        i = tarfile.TarInfo(name)
        i.type = kind
        for k, v in kw.items():
            setattr(i, k, v)
        return i

    tampered = dict(good)
    pred = next(k for k in good if k.startswith("predictions/"))
    at = good[pred].index(b'"prediction": "') + len(b'"prediction": "')       # same size, other bytes
    tampered[pred] = good[pred][:at] + (b"Q" if good[pred][at:at + 1] != b"Q" else b"R") + good[pred][at + 1:]
    bomb = io.BytesIO()                 # a few hundred KB of gzip that inflate to 300 MiB, after a valid listing
    with tarfile.open(fileobj=bomb, mode="w:gz") as tf:
        head = tarfile.TarInfo("submission.json")
        head.size = len(good["submission.json"])
        tf.addfile(head, io.BytesIO(good["submission.json"]))
        i = tarfile.TarInfo("predictions/1/zeros.jsonl")
        i.size = 300 << 20
        tf.addfile(i, io.BytesIO(bytes(300 << 20)))
    js = json.loads(good["submission.json"])
    js["meta"]["links"]["paper"] = "javascript:alert(1)"
    return {
        "traversal": (tar("traversal", {**good, "../evil.txt": b"x"}), "'..' in path"),
        "absolute": (tar("absolute", {**good, "/tmp/evil.txt": b"x"}), "absolute path"),
        "symlink": (tar("symlink", good, [info("predictions/1/link.jsonl", tarfile.SYMTYPE, linkname="/etc/passwd")]), "link"),
        "hardlink": (tar("hardlink", good, [info("hard.jsonl", tarfile.LNKTYPE, linkname="results.json")]), "link"),
        "device": (tar("device", good, [info("dev", tarfile.CHRTYPE, devmajor=1, devminor=3)]), "device"),
        "tar bomb": (bomb.getvalue(), "not listed"),
        "tampered hash": (tar("tampered", tampered), "hash mismatch"),
        "javascript link": (tar("jslink", {**good, "submission.json": json.dumps(js).encode()}), "links.paper"),
        "not a bundle": (b"<script>alert(1)</script>", "not a readable .tar.gz"),
    }


def test_hostile_uploads_are_refused_with_reasons_and_change_nothing(world, server):
    srv, tok = server
    before = _snapshot(srv.board)
    assert before, "the board has a published site"
    reasons = {}
    for i, (name, (data, words)) in enumerate(_hostile_bundles(world).items()):
        token = tok["alice"] if i % 2 else tok["bob"]
        # the per-token rate limit is 3: the maintainer's token is exempt, use it past the limit
        token = tok["maint"] if i >= 4 else token
        r = srv.upload(data, token)
        assert r.status in (202, 422), (name, r.status, r.text)
        sid = r.json()["id"]
        state = srv.wait_state(sid, token, CHECKED)
        assert state["state"] == "rejected", (name, state)
        assert words in state["reason"], (name, state["reason"])
        assert str(srv.board) not in state["reason"] and "/tmp/" not in state["reason"].replace("/tmp/evil", "")
        reasons[name] = state["reason"]
    assert _snapshot(srv.board) == before
    assert not list((srv.board / "server" / "jobs").glob("*/work/*"))      # nothing left extracted


def test_unauthenticated_oversize_and_too_frequent_requests_get_401_413_429(world, server):
    srv, tok = server
    data = world["bundle"].read_bytes()
    before = _snapshot(srv.board)
    for token in (None, "cvb_not-a-token", tok["revoked"]):
        r = srv.upload(data, token)
        assert r.status == 401 and "token" in r.json()["error"], r.text
    # Content-Length over the limit: answered 413 before any of the body is sent (the client sends headers only).
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        conn.putrequest("POST", "/api/submissions")
        for k, v in {"Authorization": f"Bearer {tok['limited']}", "Content-Length": str(2 << 20),
                     "Content-Type": "multipart/form-data; boundary=b"}.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413 and b"nothing was read" in resp.read()
    finally:
        conn.close()
    # Announced small, actually large (chunked): cut off while streaming.
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    boundary = "xyzxyz"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="bundle"; filename="b.tar.gz"\r\n\r\n').encode()

    def body():
        yield head
        for _ in range(40):                       # 40 × 64 KiB = 2.5 MiB > 1 MiB, bounded
            yield bytes(64 << 10)
        yield f"\r\n--{boundary}--\r\n".encode()
    try:
        conn.request("POST", "/api/submissions", body=body(), encode_chunked=True,
                     headers={"Authorization": f"Bearer {tok['limited']}", "Content-Type": f"multipart/form-data; boundary={boundary}",
                              "Transfer-Encoding": "chunked"})
        resp = conn.getresponse()
        assert resp.status == 413 and b"cut off" in resp.read()
    except (BrokenPipeError, ConnectionResetError):
        pass                                      # the server closed the connection at the limit
    finally:
        conn.close()
    # Rate limit: 3 per token per day, then 429 with Retry-After.
    statuses = [srv.upload(data, tok["limited"]).status for _ in range(4)]
    assert statuses[:3] == [202, 202, 202] and statuses[3] == 429, statuses
    r = srv.upload(data, tok["limited"])
    assert r.status == 429 and int(r.headers["retry-after"]) > 0 and "at most 3 submissions" in r.json()["error"]
    # Errors leak no paths or tracebacks.
    r = srv.request("GET", "/api/submissions/../../etc/passwd", token=tok["alice"])
    assert r.status == 404 and "Traceback" not in r.text and str(srv.board) not in r.text
    for sid in [s["id"] for s in srv.request("GET", "/api/submissions", token=tok["limited"]).json()["submissions"]]:
        srv.wait_state(sid, tok["limited"], CHECKED)
    assert _snapshot(srv.board) == before          # nothing was approved: the board is unchanged


# ------------------------------------------------------------------------------------------------ ownership
def test_the_token_owns_the_entry_and_a_bundle_repeating_the_owners_contact_takes_nothing_over(world, tmp_path):
    """The owner of a published entry is the token that sent it, never the bundle's contact: tokens issued to
    the same address (case, spaces, full-width or zero-width variants, or the very same string) submitting the
    same method with the victim's contact are refused at approval (409), the board unchanged; the owner's own
    resubmission replaces the entry and keeps the first version in its history."""
    board = tmp_path / "board"
    victim_contact = META["contact"]
    victim = add_token(board, victim_contact)
    attackers = {name: add_token(board, name) for name in
                 (victim_contact, victim_contact.upper(), f"  {victim_contact} ", "ｓｏｍｅｏｎｅ＠ｅｘａｍｐｌｅ．ｏｒｇ")}
    maint = add_token(board, "maintainer@example.org", maintainer=True)
    contacts = [victim_contact, "SomeOne@Example.ORG", f" {victim_contact}\t", "some\u200bone@example.org"]
    with run_server(board, world["prepared"], "--rate-limit", "50") as srv:
        def publish(token: str, data: bytes):
            sid = srv.upload(data, token).json()["id"]
            state = srv.wait_state(sid, token, CHECKED)
            assert state["state"] == "awaiting approval", state
            return sid, srv.request("POST", f"/api/submissions/{sid}/approve", token=maint)

        sid, r = publish(victim, world["bundle"].read_bytes())
        assert r.status == 200, r.text
        [first] = read_entries(board)
        assert first.submitter is not None and first.submitter.kind == "token"
        before = _snapshot(board)
        for i, (token, contact) in enumerate(zip(attackers.values(), contacts)):
            data = _bundle(world, f"takeover{i}", lambda m, c=contact: m.update(contact=c))
            sid, r = publish(token, data)
            assert r.status == 409, r.text
            assert f"entry {first.id}" in r.text and f"belongs to token {first.submitter.id}" in r.text
            assert str(board) not in r.text
            assert srv.state(sid, token)["state"] == "awaiting approval"           # the approval was undone
            assert _snapshot(board) == before
        sid, r = publish(victim, _bundle(world, "own", lambda m: m.update(contact="new-address@example.org")))
        assert r.status == 200, r.text
        [entry] = read_entries(board)
        assert entry.submitter == first.submitter and entry.bundle_sha256 != first.bundle_sha256
        assert [h["bundle_sha256"] for h in entry.history] == [first.bundle_sha256]
        assert entry.history[0]["forced"] is False and entry.history[0]["replaced_by"] == {"kind": "token", "id": first.submitter.id}


# ------------------------------------------------------------------------------------------------ concurrency
def concurrent_round(world, board: Path, n_same: int, n_pairs: int, n_single: int, *db: str) -> None:
    """``n_same`` copies of one method, 2 copies each of ``n_pairs`` others (one entry id per method: they replace
    one another under the board lock), ``n_single`` more methods, 2 broken uploads, all at once from a bounded
    pool; the server's worker and a second worker process share the queue; then every valid one is approved at
    once. Each submission must end in exactly one final state (the action log says so) and the board be valid."""
    db_args = ["--db", db[0]] if db else []
    maint = add_token(board, "maintainer@example.org", maintainer=True, db=db_args)
    users = [add_token(board, f"user{i}@example.org", db=db_args) for i in range(4)]
    bundles = [(users[0], world["bundle"].read_bytes())] * n_same
    for i in range(n_pairs + n_single):
        data = _bundle(world, f"m{i}", lambda m, i=i: m["method"].update(name=f"Method {i}"))
        bundles += [(users[1 + i % 3], data)] * (2 if i < n_pairs else 1)
    bundles += [(users[1], b"not a tarball"), (users[2], b"\x1f\x8b garbage")]
    with run_server(board, world["prepared"], "--rate-limit", "50", "--lease", "30", *db_args) as srv:
        second = subprocess.Popen([*CLI, "leaderboard", "worker", "--board", str(board), "--data", str(world["prepared"]),
                                   "--idle-exit", "20", *db_args], env=server_env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.STDOUT)
        try:
            with ThreadPoolExecutor(max_workers=20) as pool:
                replies = list(pool.map(lambda tb: (tb[0], srv.upload(tb[1], tb[0])), bundles))
            assert all(r.status in (202, 422) for _, r in replies), [r.status for _, r in replies]
            sids = [(t, r.json()["id"]) for t, r in replies]
            assert len({s for _, s in sids}) == len(bundles)
            states = {s: srv.wait_state(s, t, CHECKED, timeout=240) for t, s in sids}
            awaiting = [s for s, st in states.items() if st["state"] == "awaiting approval"]
            assert len(awaiting) == len(bundles) - 2
            with ThreadPoolExecutor(max_workers=8) as pool:
                approvals = list(pool.map(lambda s: srv.request("POST", f"/api/submissions/{s}/approve", token=maint,
                                                                timeout=300), awaiting))
            assert all(r.status == 200 for r in approvals), [r.text for r in approvals if r.status != 200]
            log = srv.request("GET", "/api/actions", token=maint).json()["actions"]
            for t, s in sids:
                final = srv.state(s, t)["state"]
                assert final in FINAL
                mine = [a["action"] for a in log if a["submission"] == s]
                assert sum(a in FINAL for a in mine) == 1, (s, mine)          # exactly one final state
                assert mine.count("awaiting approval") == (1 if final == "published" else 0), mine
        finally:
            second.send_signal(signal.SIGINT)
            second.wait(timeout=30)
        entries = read_entries(board)                                          # the board index is valid
        names = ["Seq-LoRA (test)"] + [f"Method {i}" for i in range(n_pairs + n_single)]
        assert sorted(e.name for e in entries) == sorted(names)
        index = srv.request("GET", "/").text
        assert all(index.count(f">{name}<") == 1 for name in names)


@pytest.mark.slow
def test_twenty_concurrent_submissions_each_end_in_one_final_state(world, tmp_path):
    concurrent_round(world, tmp_path / "board", 8, 4, 2)          # 8 + 2·4 + 2 + 2 broken = 20 submissions


# ------------------------------------------------------------------------------------------------ worker killed
@pytest.mark.slow
def test_worker_killed_mid_job_is_retried_after_its_lease_and_completes_once(world, tmp_path):
    board = tmp_path / "board"
    tok = add_token(board, "alice@example.org")
    maint = add_token(board, "maintainer@example.org", maintainer=True)
    worker = [*CLI, "leaderboard", "worker", "--board", str(board), "--data", str(world["prepared"]), "--lease", "3"]
    with run_server(board, world["prepared"], "--no-worker", "--rate-limit", "50") as srv:
        killed = None
        for attempt in range(5):                  # bounded: a kill can land between jobs; then try a fresh job
            sid = srv.upload(world["bundle"].read_bytes(), tok).json()["id"]
            proc = subprocess.Popen(worker, env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            try:
                def in_progress():
                    with _db(board) as con:
                        row = con.execute("select state from submissions where id = ?", (sid,)).fetchone()
                    return row[0] if row and row[0] in ("verifying", "re-scoring", "awaiting approval") else None
                seen = wait_until(in_progress, 60, interval=0.005, what="the worker to claim the job")
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            finally:
                if proc.poll() is None:
                    proc.kill()
            if seen != "awaiting approval" and srv.state(sid, tok)["state"] in ("verifying", "re-scoring"):
                killed = sid
                break
        assert killed, "never caught the worker mid-job in 5 tries"
        print(f"caught the worker mid-job on try {attempt + 1}")
        time.sleep(0.5)
        assert srv.state(killed, tok)["state"] in ("verifying", "re-scoring")          # not lost, not done
        restarted = subprocess.run([*worker, "--idle-exit", "4"], env=server_env(), capture_output=True, text=True,
                                   timeout=180)
        assert restarted.returncode == 0, restarted.stderr[-2000:]
        state = srv.state(killed, tok)
        assert state["state"] == "awaiting approval" and state["attempts"] == 2, state
        assert _actions(board, killed).count("awaiting approval") == 1
        assert srv.request("POST", f"/api/submissions/{killed}/approve", token=maint).status == 200
        assert _actions(board, killed).count("published") == 1
        assert len(read_entries(board)) == 1
        assert not list((board / "server" / "jobs").glob("*/work/*"))


# ------------------------------------------------------------------------------------------------ several seeds
def test_several_seeds_are_one_row_with_mean_and_confidence_interval(world, tmp_path):
    from cvit_bench.leaderboard.replicates import mean_ci
    from cvit_bench.leaderboard.site import build_site
    from cvit_bench.leaderboard.submit import submit

    ci = mean_ci([50.0, 52.0, 54.0])
    assert ci.mean == 52.0 and abs(ci.half_width - 4.303 * 2.0 / 3 ** 0.5) < 1e-9 and ci.n == 3
    board = tmp_path / "board"
    for seed in (0, 1, 2):
        run = tmp_path / f"run{seed}"
        results = make_run_out(world["prepared"], run)
        doc = json.loads((run / "results.json").read_text())
        for s in doc["stages"]:                                       # other checkpoints per seed
            s["checkpoint_sha256"] = f"{seed:02d}" + s["checkpoint_sha256"][2:]
        (run / "results.json").write_text(json.dumps(doc))
        submit(pack(run, {**META, "seed": seed}, tmp_path / f"b{seed}.tar.gz"), board, data=world["prepared"])
        assert results
    entries = read_entries(board)
    assert sorted(e.seed for e in entries) == [0, 1, 2]
    site = build_site(board, tmp_path / "site")
    html = site.index.read_text()
    assert html.count('class="entry kind-method') == 1                 # one row for three seeds
    assert 'data-seeds="3"' in html and all(f"entries/{e.id}.html" in html for e in entries)
    assert " ± 0.00" in html                                          # identical predictions: zero width
    for e in entries:
        assert (tmp_path / "site" / "entries" / f"{e.id}.html").is_file()
