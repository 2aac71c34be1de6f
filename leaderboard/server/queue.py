"""The durable queue: submissions and their state changes (functions over a session factory; no HTTP here).

Every change is a conditional update (``WHERE state IN <allowed>`` and, for a worker, ``AND lease_owner = me``)
in its own short transaction, so concurrent web requests, workers and maintainers can never move one
submission twice. The lease: a worker that claims a job owns it until ``lease_until``; each stage renews it;
a worker killed mid-job simply stops renewing, and after the lease another worker (or the same one restarted)
claims the job again from the start (every stage is a pure function of the uploaded bundle, so a retry gives
the same result). After :attr:`ServerConfig.max_attempts` claims the job is rejected, so a bundle that kills
its worker cannot loop forever.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from . import db
from .db import ActionRow, SubmissionRow, TokenRow, log_action
from .tokens import Principal, touch


class RateLimited(Exception):
    def __init__(self, limit: int, window_s: int, retry_after_s: int) -> None:
        self.limit, self.window_s, self.retry_after_s = limit, window_s, retry_after_s
        super().__init__(f"rate limit: at most {limit} submissions per {_window_text(window_s)} for a token; "
                         f"try again in {retry_after_s} s")


def _window_text(seconds: int) -> str:
    return "day" if seconds == 86400 else "hour" if seconds == 3600 else f"{seconds} s"


@dataclass(frozen=True)
class SubmissionView:
    """What the status page and the API show of one submission."""

    id: str
    state: str
    reason: str | None
    note: str | None
    owner: str
    token_id: int
    bytes: int
    bundle_sha256: str | None
    meta: dict[str, Any] | None
    entry_id: str | None
    created: float
    updated: float
    attempts: int

    @property
    def is_final(self) -> bool:
        return self.state in db.FINAL_STATES

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "reason": self.reason, "note": self.note,
                "entry_id": self.entry_id, "bundle_sha256": self.bundle_sha256, "bytes": self.bytes,
                "meta": self.meta, "final": self.is_final, "attempts": self.attempts,
                "created_utc": _utc(self.created), "updated_utc": _utc(self.updated),
                "location": f"/api/submissions/{self.id}"}


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def new_id() -> str:
    return uuid.uuid4().hex


def recent_count(session, token_id: int, since: float) -> tuple[int, float | None]:
    """Submissions of a token since ``since`` and the oldest of them (to say when the window frees up)."""
    n, oldest = session.execute(select(func.count(SubmissionRow.id), func.min(SubmissionRow.created))
                                .where(SubmissionRow.token_id == token_id, SubmissionRow.created >= since)).one()
    return int(n), oldest


def check_rate(sessions, who: Principal, limit: int, window_s: int) -> None:
    """Refuse early (before reading a body) when the token has no submission left in its window."""
    if who.is_maintainer:
        return
    now = time.time()
    with sessions() as s:
        n, oldest = recent_count(s, who.token_id, now - window_s)
    if n >= limit:
        raise RateLimited(limit, window_s, max(1, int((oldest or now) + window_s - now)))


def create(sessions, who: Principal, sid: str, *, state: str, size: int, sha256: str | None,
           meta: dict[str, Any] | None, reason: str | None, limit: int, window_s: int) -> SubmissionView:
    """Record an upload; the rate limit is checked again inside the transaction (under the token's row lock),
    so concurrent uploads of one token cannot overrun it."""
    now = time.time()
    with sessions.begin() as s:
        touch(s, who.token_id, now)
        if not who.is_maintainer:
            n, oldest = recent_count(s, who.token_id, now - window_s)
            if n >= limit:
                raise RateLimited(limit, window_s, max(1, int((oldest or now) + window_s - now)))
        row = SubmissionRow(id=sid, token_id=who.token_id, state=state, reason=reason, bytes=size,
                            bundle_sha256=sha256, meta_json=json.dumps(meta) if meta is not None else None,
                            created=now, updated=now, attempts=0, lease_until=0.0)
        s.add(row)
        log_action(s, sid, who.actor, state, f"uploaded{': ' + reason if reason else ''}")
    return get(sessions, sid)


def get(sessions, sid: str) -> SubmissionView | None:
    with sessions() as s:
        pair = s.execute(select(SubmissionRow, TokenRow.name).join(TokenRow, SubmissionRow.token_id == TokenRow.id)
                         .where(SubmissionRow.id == sid)).first()
    return _view(*pair) if pair else None


def list_submissions(sessions, *, token_id: int | None = None, limit: int = 500) -> list[SubmissionView]:
    q = (select(SubmissionRow, TokenRow.name).join(TokenRow, SubmissionRow.token_id == TokenRow.id)
         .order_by(SubmissionRow.created.desc()).limit(limit))
    if token_id is not None:
        q = q.where(SubmissionRow.token_id == token_id)
    with sessions() as s:
        return [_view(r, name) for r, name in s.execute(q)]


def actions(sessions, sid: str | None = None, limit: int = 500) -> list[ActionRow]:
    q = select(ActionRow).order_by(ActionRow.id.desc()).limit(limit)
    if sid is not None:
        q = q.where(ActionRow.submission_id == sid)
    with sessions() as s:
        return list(s.scalars(q))


def transition(sessions, sid: str, allowed: tuple[str, ...], new_state: str, actor: str, *,
               note: str | None = None, reason: str | None = None, owner: str | None = None,
               **values: Any) -> bool:
    """Move ``sid`` from one of ``allowed`` to ``new_state`` (and log it); False when it was not in ``allowed``
    (someone else moved it first) or, with ``owner``, when that worker no longer holds the lease."""
    now = time.time()
    cond = [SubmissionRow.id == sid, SubmissionRow.state.in_(allowed)]
    if owner is not None:
        cond.append(SubmissionRow.lease_owner == owner)
    extra = dict(values)
    if note is not None:
        extra["note"] = note
    if reason is not None:
        extra["reason"] = reason
    with sessions.begin() as s:
        done = s.execute(update(SubmissionRow).where(*cond).values(state=new_state, updated=now, **extra)).rowcount == 1
        if done:
            log_action(s, sid, actor, new_state, note or reason)
    return done


# ------------------------------------------------------------------------------------------------ worker side
def claim(sessions, owner: str, lease_s: float) -> SubmissionView | None:
    """Take the oldest queued job, or one whose worker's lease ran out; None when there is nothing to do."""
    now = time.time()
    with sessions() as s:
        candidates = list(s.scalars(
            select(SubmissionRow.id).where(
                (SubmissionRow.state == db.QUEUED)
                | (SubmissionRow.state.in_(db.IN_PROGRESS) & (SubmissionRow.lease_until < now)))
            .order_by(SubmissionRow.created).limit(8)))
    for sid in candidates:
        with sessions.begin() as s:
            took = s.execute(
                update(SubmissionRow).where(
                    SubmissionRow.id == sid,
                    (SubmissionRow.state == db.QUEUED)
                    | (SubmissionRow.state.in_(db.IN_PROGRESS) & (SubmissionRow.lease_until < now)))
                .values(state=db.VERIFYING, lease_owner=owner, lease_until=now + lease_s,
                        attempts=SubmissionRow.attempts + 1, updated=now)).rowcount == 1
            if took:
                log_action(s, sid, f"worker {owner}", db.VERIFYING, "claimed")
        if took:
            return get(sessions, sid)
    return None


def renew(sessions, sid: str, owner: str, lease_s: float, state: str) -> bool:
    """Extend the lease and record the stage; False when the lease was lost (stop working on the job)."""
    return transition(sessions, sid, db.IN_PROGRESS, state, f"worker {owner}", owner=owner,
                      lease_until=time.time() + lease_s)


def extend_lease(sessions, sid: str, owner: str, lease_s: float) -> bool:
    """The worker's heartbeat: push the lease forward without a state change (not logged)."""
    with sessions.begin() as s:
        return s.execute(update(SubmissionRow).where(SubmissionRow.id == sid, SubmissionRow.lease_owner == owner,
                                                     SubmissionRow.state.in_(db.IN_PROGRESS))
                         .values(lease_until=time.time() + lease_s)).rowcount == 1


def _view(row: SubmissionRow, owner: str) -> SubmissionView:
    return SubmissionView(id=row.id, state=row.state, reason=row.reason, note=row.note, owner=owner,
                          token_id=row.token_id, bytes=row.bytes, bundle_sha256=row.bundle_sha256,
                          meta=json.loads(row.meta_json) if row.meta_json else None, entry_id=row.entry_id,
                          created=row.created, updated=row.updated, attempts=row.attempts)
