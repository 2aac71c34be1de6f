"""The ASGI app (Starlette): the board's pages, the Submit page, status pages, moderation, and the JSON API.

Routes::

    GET  /                         the published static site (same files ``leaderboard build`` writes)
    GET  /submit                   sign-in (token) or the upload form, and the user's submissions
    POST /login, /logout           sets / clears the HttpOnly, SameSite=Strict token cookie
    POST /submit                   form upload (streamed) → status page showing meta.yaml, with "confirm"
    GET  /submissions/<id>         status page (owner or maintainer), follows the state without a reload
    POST /submissions/<id>/<act>   confirm, approve, reject, hide, unhide, withdraw (:mod:`.moderation`)
    GET  /moderate                 maintainer view: every submission, its actions, the action log
    POST /api/submissions          ``Authorization: Bearer <token>``, multipart field ``bundle`` → 202 + Location
    GET  /api/submissions[/<id>]   JSON state (and the reason when refused)
    POST /api/submissions/<id>/<act>   the moderation actions for scripts (maintainer token)
    GET  /api/actions              the action log (maintainer token)

Security: form posts need the CSRF token (double submit: a random ``cvb_csrf`` cookie equal to the form's
``csrf`` field, plus a same-origin check of ``Origin``); every response carries the board's CSP (no inline
script; ``connect-src``/``form-action`` ``'self'`` added for the server's own fetch and forms) and
``nosniff``/``DENY`` framing headers; untrusted strings reach HTML only through Jinja2 autoescape; errors answer
with a status and a message, never a path or a traceback; 401 (no or wrong token), 413 (too large), 429 (too
many submissions for the token, or too many failed sign-ins from one address) carry a clear message.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import shutil
import threading
import time
from collections import deque
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cvit_bench import __version__
from cvit_bench.errors import CvitError

from ..site import CSP as SITE_CSP
from . import db, moderation, queue
from .config import ServerConfig
from .publish import rebuild_site
from .tokens import Principal, authenticate
from .uploads import TooLarge, UploadError, read_meta, receive_upload
from .worker import BUNDLE_NAME, job_dir, redact, run_worker

log = logging.getLogger("cvit_bench.leaderboard.server")
CSP = SITE_CSP.replace("form-action 'none'", "form-action 'self'") + "; connect-src 'self'; frame-ancestors 'none'"
TOKEN_COOKIE = "cvb_token"
CSRF_COOKIE = "cvb_csrf"
LOGIN_FAILURES = 10                  # failed sign-ins (or wrong API tokens) per address ...
LOGIN_WINDOW_S = 600                 # ... per ten minutes, then 429
META_FIELDS = (("method", ("method", "name")), ("family", ("method", "family")),
               ("description", ("method", "description")), ("base model", ("base_model", "name")),
               ("base model revision", ("base_model", "revision")), ("trainable parameters", ("trainable_params",)),
               ("extra data", ("extra_data", "used")), ("extra data description", ("extra_data", "description")),
               ("paper", ("links", "paper")), ("code", ("links", "code")), ("contact", ("contact",)),
               ("seed", ("seed",)))


def meta_rows(meta: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The meta.yaml fields as (label, text) for the status page (text only: links are not clickable yet)."""
    rows = []
    for label, path in META_FIELDS:
        value: Any = meta or {}
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and value != "":
            rows.append((label, str(value)))
    return rows


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.url.path.startswith(("/api/", "/submissions/", "/moderate", "/submit")):
            response.headers["Cache-Control"] = "no-store"
        return response


class FailureCounter:
    """Failed authentications per client address in a sliding window (in memory: a restart forgets them)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, addr: str) -> bool:
        with self._lock:
            hits = self._hits.get(addr)
            now = time.monotonic()
            while hits and hits[0] < now - self.window_s:
                hits.popleft()
            return bool(hits) and len(hits) >= self.limit

    def fail(self, addr: str) -> None:
        with self._lock:
            self._hits.setdefault(addr, deque()).append(time.monotonic())


class Server:
    """The app's state: configuration, database sessions, templates; one method per route."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.engine = db.make_engine(cfg.database_url)
        self.sessions = db.make_sessions(self.engine)
        self.env = _environment()
        self.failures = FailureCounter(LOGIN_FAILURES, LOGIN_WINDOW_S)
        cfg.jobs_dir.mkdir(parents=True, exist_ok=True)
        if not (cfg.site_dir / "index.html").is_file():
            rebuild_site(cfg)

    # --------------------------------------------------------------------------------------- helpers
    def render(self, request: Request, name: str, http_status: int = 200, **ctx: Any) -> HTMLResponse:
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        html = self.env.get_template(name).render(csp=CSP, version=__version__, title=self.cfg.title,
                                                  static="/static/", csrf=csrf, **ctx)
        response = HTMLResponse(html, status_code=http_status)
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/",
                                secure=self.cfg.https_only_cookies)
        return response

    def error(self, request: Request, status: int, message: str, *, who: Principal | None = None,
              headers: dict[str, str] | None = None) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)
        response = self.render(request, "error.html.j2", status, status=status, phrase=_phrase(status),
                               message=message, who=who)
        for k, v in (headers or {}).items():
            response.headers[k] = v
        return response

    def bearer(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def principal(self, request: Request, *, bearer_only: bool = False) -> Principal | None:
        token = self.bearer(request) or (None if bearer_only else request.cookies.get(TOKEN_COOKIE))
        return authenticate(self.sessions, token)

    def require(self, request: Request, *, bearer_only: bool = False) -> Principal:
        """The caller's principal or 401. ``bearer_only``: API writes take the token from the header only, never
        from the cookie, so no form on another site can make a signed-in browser call them."""
        addr = _client(request)
        if self.failures.blocked(addr):
            raise _Refusal(429, "too many failed sign-ins from this address; wait ten minutes",
                           {"Retry-After": str(LOGIN_WINDOW_S)})
        who = self.principal(request, bearer_only=bearer_only)
        if who is None:
            if self.bearer(request) or request.cookies.get(TOKEN_COOKIE):
                self.failures.fail(addr)
            raise _Refusal(401, "a valid submitter token is required (Authorization: Bearer <token>, or sign in "
                                "on the Submit page); ask the board maintainer for one", {"WWW-Authenticate": "Bearer"})
        return who

    def check_origin(self, request: Request) -> None:
        """Refuse a form post another site made the browser send (before reading its body). ``Origin`` is
        ``null`` under the pages' no-referrer policy, so the browser's ``Sec-Fetch-Site`` is checked too; the
        CSRF token (:meth:`check_csrf`) is the check that always applies."""
        origin = request.headers.get("origin")
        site = request.headers.get("sec-fetch-site")
        if (origin and origin != "null" and origin != f"{request.url.scheme}://{request.url.netloc}") or \
                (site is not None and site not in ("same-origin", "none")):
            raise _Refusal(403, "cross-site form post refused (it did not come from this board's pages)")

    def check_csrf(self, request: Request, fields: dict[str, str]) -> None:
        self.check_origin(request)
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, fields.get("csrf", "")):
            raise _Refusal(403, "the form expired or was not sent from this board's page (CSRF check); reload and retry")

    # --------------------------------------------------------------------------------------- uploads
    async def receive(self, request: Request, who: Principal, *, from_form: bool) -> queue.SubmissionView:
        """Stream, hash, read the meta and record one upload (form: ``uploaded``; API: ``queued``)."""
        await asyncio.to_thread(queue.check_rate, self.sessions, who, self.cfg.rate_limit, self.cfg.rate_window_s)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.cfg.max_upload_bytes + 64 * 1024:
            raise TooLarge(f"the request body ({int(length)} bytes) is larger than this board's limit of "
                           f"{self.cfg.max_upload_bytes} bytes; nothing was read")
        if from_form:
            self.check_origin(request)
        sid = queue.new_id()
        folder = job_dir(self.cfg, sid)
        try:
            up = await receive_upload(request.stream(), request.headers.get("content-type"), folder / BUNDLE_NAME,
                                      self.cfg.max_upload_bytes)
            if from_form:
                self.check_csrf(request, up.fields)
            try:
                doc = await asyncio.to_thread(read_meta, up.path, self.cfg.limits, folder)
                meta, state, reason = doc["meta"], (db.UPLOADED if from_form else db.QUEUED), None
            except CvitError as exc:
                meta, state, reason = None, db.REJECTED, redact(str(exc), self.cfg, sid)
            return await asyncio.to_thread(
                queue.create, self.sessions, who, sid, state=state, size=up.size, sha256=up.sha256, meta=meta,
                reason=reason, limit=self.cfg.rate_limit, window_s=self.cfg.rate_window_s)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    # --------------------------------------------------------------------------------------- pages
    async def submit_page(self, request: Request) -> Response:
        who = self.principal(request)
        mine = []
        if who is not None:
            mine = [_row(s) for s in queue.list_submissions(self.sessions, token_id=who.token_id, limit=50)]
        return self.render(request, "submit.html.j2", who=who, mine=mine, message=request.query_params.get("m"),
                           max_mb=f"{self.cfg.max_upload_bytes / (1 << 20):.0f}",
                           rate_text=f"{self.cfg.rate_limit} submission(s) per token per "
                                     f"{queue._window_text(self.cfg.rate_window_s)}")

    async def login(self, request: Request) -> Response:
        addr = _client(request)
        if self.failures.blocked(addr):
            raise _Refusal(429, "too many failed sign-ins from this address; wait ten minutes",
                           {"Retry-After": str(LOGIN_WINDOW_S)})
        form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
        fields = {k: str(v) for k, v in form.items()}
        self.check_csrf(request, fields)
        token = fields.get("token", "").strip()
        who = authenticate(self.sessions, token)
        if who is None:
            self.failures.fail(addr)
            return self.error(request, 401, "this token is not valid (wrong, or revoked); ask the board maintainer")
        response = RedirectResponse("/moderate" if who.is_maintainer else "/submit", status_code=303)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/",
                            secure=self.cfg.https_only_cookies, max_age=30 * 86400)
        return response

    async def logout(self, request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
        self.check_csrf(request, {k: str(v) for k, v in form.items()})
        response = RedirectResponse("/submit", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, path="/")
        return response

    async def submit_form(self, request: Request) -> Response:
        who = self.require(request)
        sub = await self.receive(request, who, from_form=True)
        return RedirectResponse(f"/submissions/{sub.id}", status_code=303)

    def _own(self, sid: str, who: Principal) -> queue.SubmissionView:
        sub = queue.get(self.sessions, sid)
        if sub is None or not (who.is_maintainer or sub.token_id == who.token_id):
            raise _Refusal(404, "no such submission (or it is not yours)")
        return sub

    async def status_page(self, request: Request) -> Response:
        who = self.require(request)
        sub = self._own(request.path_params["sid"], who)
        log_rows = queue.actions(self.sessions, sub.id, limit=100)
        return self.render(request, "status.html.j2", who=who, sub=sub, meta_rows=meta_rows(sub.meta),
                           actions=moderation.available(sub, who), log=list(reversed(log_rows)))

    async def act_form(self, request: Request) -> Response:
        who = self.require(request)
        form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
        fields = {k: str(v) for k, v in form.items()}
        self.check_csrf(request, fields)
        sid, name = request.path_params["sid"], request.path_params["action"]
        await asyncio.to_thread(moderation.act, self.cfg, self.sessions, sid, name, who, fields.get("note"))
        back = "/moderate" if who.is_maintainer and name != "confirm" else f"/submissions/{sid}"
        return RedirectResponse(back, status_code=303)

    async def moderate_page(self, request: Request) -> Response:
        who = self.require(request)
        if not who.is_maintainer:
            raise _Refusal(403, "the moderation view needs a maintainer token")
        subs = queue.list_submissions(self.sessions, limit=500)
        rows = [{**_row(s), "actions": [a for a in moderation.available(s, who) if a != "confirm"]} for s in subs]
        return self.render(request, "moderate.html.j2", who=who, subs=rows, log=queue.actions(self.sessions, limit=200),
                           message=None)

    # --------------------------------------------------------------------------------------- API
    async def api_create(self, request: Request) -> Response:
        who = self.require(request, bearer_only=True)
        sub = await self.receive(request, who, from_form=False)
        status = 202 if sub.state != db.REJECTED else 422
        return JSONResponse(sub.to_json(), status_code=status, headers={"Location": f"/api/submissions/{sub.id}"})

    async def api_list(self, request: Request) -> Response:
        who = self.require(request)
        subs = queue.list_submissions(self.sessions, token_id=None if who.is_maintainer else who.token_id)
        return JSONResponse({"submissions": [s.to_json() for s in subs]})

    async def api_get(self, request: Request) -> Response:
        who = self.require(request)
        return JSONResponse(self._own(request.path_params["sid"], who).to_json())

    async def api_act(self, request: Request) -> Response:
        who = self.require(request, bearer_only=True)
        note = None
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await request.body()
            if len(body) > 8192:
                raise _Refusal(413, "the JSON body is larger than 8 KiB")
            try:
                note = (json.loads(body or b"{}") or {}).get("note")
            except (ValueError, AttributeError):
                raise _Refusal(400, 'send {"note": "..."} as JSON') from None
        sub = await asyncio.to_thread(moderation.act, self.cfg, self.sessions, request.path_params["sid"],
                                      request.path_params["action"], who, note if isinstance(note, str) else None)
        return JSONResponse(sub.to_json())

    async def api_actions(self, request: Request) -> Response:
        who = self.require(request)
        if not who.is_maintainer:
            raise _Refusal(403, "the action log needs a maintainer token")
        return JSONResponse({"actions": [{"submission": a.submission_id, "actor": a.actor, "at_utc": a.at_utc,
                                          "action": a.action, "note": a.note} for a in queue.actions(self.sessions)]})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "version": __version__})


class _Refusal(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _phrase(status: int) -> str:
    return {400: "Bad request", 401: "Not signed in", 403: "Forbidden", 404: "Not found", 409: "Conflict",
            413: "Too large", 422: "Refused", 429: "Too many requests", 500: "Server error"}.get(status, "Error")


def _row(s: queue.SubmissionView) -> dict[str, Any]:
    meta = s.meta or {}
    return {"id": s.id, "created_utc": s.to_json()["created_utc"], "state": s.state, "owner": s.owner,
            "method": (meta.get("method") or {}).get("name") or "(no meta)", "seed": meta.get("seed", ""),
            "reason": s.reason or s.note or ""}


def _environment() -> jinja2.Environment:
    from cvit_bench.report.html import make_environment

    return make_environment([jinja2.PackageLoader("cvit_bench.leaderboard.server", "templates"),
                             jinja2.PackageLoader("cvit_bench.leaderboard", "templates")])


def create_app(cfg: ServerConfig) -> Starlette:
    """The ASGI app for ``cfg`` (``uvicorn`` serves it; see :func:`serve`)."""
    srv = Server(cfg)

    async def on_refusal(request: Request, exc: Exception) -> Response:
        if isinstance(exc, _Refusal):
            return srv.error(request, exc.status, exc.message, headers=exc.headers)
        if isinstance(exc, queue.RateLimited):
            return srv.error(request, 429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
        if isinstance(exc, UploadError):
            return srv.error(request, exc.status, str(exc), headers={"Connection": "close"} if exc.status == 413 else None)
        if isinstance(exc, moderation.ActionRefused):
            return srv.error(request, exc.status, str(exc))
        if isinstance(exc, HTTPException):
            return srv.error(request, exc.status_code, "no such page" if exc.status_code == 404 else str(exc.detail))
        log.exception("unexpected error on %s", request.url.path)
        return srv.error(request, 500, "the server failed on this request; the maintainer can see the log")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        stop = threading.Event()
        thread = None
        if cfg.in_process_worker:
            thread = threading.Thread(target=run_worker, args=(cfg, srv.sessions), kwargs={"stop": stop},
                                      name="cvit-bench-worker", daemon=True)
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=30)
            srv.engine.dispose()

    routes = [
        Route("/healthz", srv.health),
        Route("/submit", srv.submit_page, methods=["GET"]),
        Route("/submit", srv.submit_form, methods=["POST"]),
        Route("/login", srv.login, methods=["POST"]),
        Route("/logout", srv.logout, methods=["POST"]),
        Route("/moderate", srv.moderate_page, methods=["GET"]),
        Route("/submissions/{sid:str}", srv.status_page, methods=["GET"]),
        Route("/submissions/{sid:str}/{action:str}", srv.act_form, methods=["POST"]),
        Route("/api/submissions", srv.api_create, methods=["POST"]),
        Route("/api/submissions", srv.api_list, methods=["GET"]),
        Route("/api/submissions/{sid:str}", srv.api_get, methods=["GET"]),
        Route("/api/submissions/{sid:str}/{action:str}", srv.api_act, methods=["POST"]),
        Route("/api/actions", srv.api_actions, methods=["GET"]),
        Mount("/_server", app=StaticFiles(packages=[("cvit_bench.leaderboard.server", "static")])),
        Mount("/", app=StaticFiles(directory=str(cfg.site_dir), html=True)),
    ]
    handlers = {exc: on_refusal for exc in (_Refusal, queue.RateLimited, UploadError, moderation.ActionRefused,
                                            HTTPException, Exception)}
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)], exception_handlers=handlers,
                    lifespan=lifespan)
    app.state.server = srv
    return app


def serve(cfg: ServerConfig, host: str = "127.0.0.1", port: int = 8000, *, proxy_headers: bool = False) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(cfg), host=host, port=port, proxy_headers=proxy_headers,
                forwarded_allow_ips="*" if proxy_headers else None, log_level="info", server_header=False,
                h11_max_incomplete_event_size=64 * 1024)
