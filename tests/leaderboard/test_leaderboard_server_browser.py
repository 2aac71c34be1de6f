"""The submission server in headless Chromium: a submitter goes from the board to Submit, signs in with a token,
uploads a bundle made by ``pack``, sees its meta.yaml fields, confirms, and watches the status reach "awaiting
approval" without a reload; a maintainer approves in the browser and the row appears on the board page and in
the rebuilt static site. Hostile uploads through the form (XSS in every meta field, path traversal) show their
text inert and their refusal reasons; no injected script runs; every request stays on 127.0.0.1.
Screenshots: ``test-artifacts/server-*.png``.
"""
from __future__ import annotations

import copy

import pytest

from cvit_bench.leaderboard.board import read_entries
from cvit_bench.leaderboard.bundle import pack
from browser import open_page, screenshot
from leaderboard_fixtures import META, read_tar, write_tar
from server_fixtures import add_token, run_server

pytestmark = pytest.mark.browser
XSS = '<script>alert("x")</script><img src=x onerror=alert(2)>'


@pytest.fixture(scope="module")
def world(tmp_path_factory, board_prepared, run_out, bundle):
    root = tmp_path_factory.mktemp("lb-server-browser")
    evil = copy.deepcopy(META)
    evil["method"].update(name="Evil " + XSS, description=XSS)
    evil["base_model"].update(revision=XSS)
    evil.update(contact=XSS, extra_data={"used": True, "description": XSS})
    members = read_tar(bundle)
    return {"root": root, "prepared": board_prepared, "bundle": bundle,
            "evil": pack(run_out, evil, root / "evil.tar.gz"),
            "traversal": write_tar(root / "traversal.tar.gz", {**members, "../../escape.txt": b"x"})}


def _sign_in(page, url: str, token: str) -> None:
    page.goto(f"{url}/submit")
    page.fill("#login-form input[name=token]", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_load_state("load")


def _upload(page, path) -> None:
    page.set_input_files("#upload-form input[name=bundle]", str(path))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#state")


def test_pack_upload_confirm_approve_publish_in_the_browser(world, tmp_path):
    board = tmp_path / "board"
    user = add_token(board, "alice@example.org")
    maint = add_token(board, "maintainer@example.org", maintainer=True)
    with run_server(board, world["prepared"], "--rate-limit", "10") as srv, \
            open_page(srv.url + "/", allow=(srv.url + "/",)) as st:
        page = st.page
        before = (board / "site" / "index.html").read_bytes()
        page.click('a[data-link="submit"]')                       # the board links to its Submit page
        page.wait_for_selector("#login-form")
        _sign_in(page, srv.url, "cvb_wrong-token")
        assert "not valid" in page.inner_text("[data-error]")
        _sign_in(page, srv.url, user)
        assert page.inner_text("[data-who]") == "alice@example.org"
        _upload(page, world["bundle"])
        assert page.get_attribute("#state", "data-state") == "uploaded"
        assert page.inner_text('[data-field="method"]') == "Seq-LoRA (test)"          # meta.yaml shown back
        assert page.inner_text('[data-field="contact"]') == "someone@example.org"
        page.click('form[data-action="confirm"] button')
        page.wait_for_selector('#state[data-state="awaiting approval"]', timeout=120_000)   # no reload: polling
        screenshot(page, "server-status.png")
        assert (board / "site" / "index.html").read_bytes() == before                    # nothing public yet

        # Hostile uploads through the form: inert text, refusal reasons.
        _upload_page = f"{srv.url}/submit"
        page.goto(_upload_page)
        _upload(page, world["evil"])
        assert page.inner_text('[data-field="method"]') == "Evil " + XSS
        assert page.inner_text('[data-field="contact"]') == XSS
        page.click('form[data-action="confirm"] button')
        page.wait_for_selector('#state[data-state="awaiting approval"]', timeout=120_000)
        page.goto(_upload_page)
        _upload(page, world["traversal"])                        # refused at upload: nothing to confirm
        assert page.get_attribute("#state", "data-state") == "rejected"
        assert "'..' in path" in page.inner_text("#reason")
        assert page.locator('form[data-action="confirm"]').count() == 0

        # The maintainer approves both valid ones in the browser.
        page.click("form[action='/logout'] button")
        _sign_in(page, srv.url, maint)
        assert page.url.endswith("/moderate")
        assert page.locator("tr[data-state='awaiting approval']").count() == 2
        assert "Evil <script>" in page.inner_text("table[data-table=moderation]")
        screenshot(page, "server-moderation.png")
        for _ in range(2):
            page.locator("tr[data-state='awaiting approval'] form[data-action='approve'] button").first.click()
            page.wait_for_load_state("load")
        assert page.locator("tr[data-state='published']").count() == 2
        assert page.locator("table[data-table=actions] td", has_text="maintainer@example.org").count() >= 2

        page.goto(srv.url + "/")
        names = page.locator("table.board th.name a").all_inner_texts()
        assert "Seq-LoRA (test)" in names and "Evil " + XSS in names
        screenshot(page, "server-board.png")
        page.locator("table.board th.name a", has_text="Evil").click()
        page.wait_for_load_state("load")
        assert page.inner_text("[data-entry-name]") == "Evil " + XSS
        site = (board / "site" / "index.html").read_text()
        assert "Seq-LoRA (test)" in site and "<script>alert" not in site          # rebuilt, escaped
        assert sorted(e.name for e in read_entries(board)) == sorted(["Seq-LoRA (test)", "Evil " + XSS])
        assert not (tmp_path / "escape.txt").exists() and not (board.parent / "escape.txt").exists()
        assert st.dialogs == [] and st.requests == []                 # no script ran; nothing left 127.0.0.1
