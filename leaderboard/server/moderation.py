"""Moderation: what a maintainer (and a submitter, for their own upload) may do to a submission.

A registry of actions, each = (who may do it, the states it applies to, the state it leads to, the board change).
The state change is claimed first with a conditional update, then the board is changed: two maintainers
approving at once publish once (the second gets "not awaiting approval"); if the board change fails the state
is put back. Every action is logged with its actor, time and note (:func:`.db.log_action`).

- ``confirm`` (the submitter, after seeing the meta.yaml fields of a form upload): uploaded → queued;
- ``approve``: awaiting approval → published (the entry is stored on the board, the site rebuilt);
- ``reject`` (with a note): uploaded, queued or awaiting approval → rejected;
- ``hide``: published → hidden (off the public pages, kept); ``unhide``: hidden → published;
- ``withdraw``: published, hidden or awaiting approval → withdrawn (off the board for good, kept for audit).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cvit_bench.errors import CvitError
from cvit_bench.files import read_json

from ..board import Entry, OwnershipError
from . import db, publish, queue
from .config import ServerConfig
from .tokens import Principal
from .worker import BUNDLE_NAME, ENTRY_NAME, job_dir


class ActionRefused(CvitError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Action:
    name: str
    allowed: tuple[str, ...]
    target: str
    maintainer_only: bool
    apply: Callable[[ServerConfig, queue.SubmissionView], None] | None = None
    needs_note: bool = False


def _approve(cfg: ServerConfig, sub: queue.SubmissionView) -> None:
    folder = job_dir(cfg, sub.id)
    entry_file = folder / ENTRY_NAME
    entry = Entry.from_dict(read_json(entry_file, "verified entry of the submission"), str(entry_file))
    try:
        publish.publish(cfg, entry, folder / BUNDLE_NAME, sub.token_id)
    except OwnershipError as exc:
        raise ActionRefused(str(exc).replace(str(folder / BUNDLE_NAME), BUNDLE_NAME), 409) from None


def _hide(cfg: ServerConfig, sub: queue.SubmissionView) -> None:
    publish.take_down(cfg, sub.entry_id, "hidden", bundle_sha256=sub.bundle_sha256)


def _unhide(cfg: ServerConfig, sub: queue.SubmissionView) -> None:
    if not publish.restore(cfg, sub.entry_id):
        raise ActionRefused("a newer entry with the same id is on the board; this version stays hidden", 409)


def _withdraw(cfg: ServerConfig, sub: queue.SubmissionView) -> None:
    if sub.entry_id and sub.state != db.AWAITING:
        publish.take_down(cfg, sub.entry_id, "withdrawn", bundle_sha256=sub.bundle_sha256)


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("confirm", (db.UPLOADED,), db.QUEUED, maintainer_only=False),
    Action("approve", (db.AWAITING,), db.PUBLISHED, maintainer_only=True, apply=_approve),
    Action("reject", (db.UPLOADED, db.QUEUED, db.AWAITING), db.REJECTED, maintainer_only=True, needs_note=True),
    Action("hide", (db.PUBLISHED,), db.HIDDEN, maintainer_only=True, apply=_hide),
    Action("unhide", (db.HIDDEN,), db.PUBLISHED, maintainer_only=True, apply=_unhide),
    Action("withdraw", (db.PUBLISHED, db.HIDDEN, db.AWAITING), db.WITHDRAWN, maintainer_only=True, apply=_withdraw),
)}


def available(sub: queue.SubmissionView, who: Principal) -> list[str]:
    """The actions ``who`` may take on ``sub`` now (for the buttons of the pages)."""
    return [a.name for a in ACTIONS.values() if sub.state in a.allowed and _may(a, sub, who)]


def _may(action: Action, sub: queue.SubmissionView, who: Principal) -> bool:
    return who.is_maintainer if action.maintainer_only else (who.token_id == sub.token_id or who.is_maintainer)


def act(cfg: ServerConfig, sessions, sid: str, name: str, who: Principal, note: str | None = None) -> queue.SubmissionView:
    """Apply action ``name`` to submission ``sid`` as ``who``; raises :class:`ActionRefused` (with an HTTP status)."""
    action = ACTIONS.get(name)
    if action is None:
        raise ActionRefused(f"unknown action {name!r}; valid: {', '.join(ACTIONS)}", 404)
    sub = queue.get(sessions, sid)
    if sub is None or not (who.is_maintainer or who.token_id == sub.token_id):
        raise ActionRefused("no such submission", 404)
    if not _may(action, sub, who):
        raise ActionRefused(f"{name} needs a maintainer token", 403)
    note = (note or "").strip()[:2000] or None
    if action.needs_note and not note:
        raise ActionRefused(f"{name} needs a note (the reason shown to the submitter)", 400)
    reason = f"rejected by a maintainer: {note}" if name == "reject" else None
    if not queue.transition(sessions, sid, action.allowed, action.target, who.actor, note=note, reason=reason):
        raise ActionRefused(f"cannot {name}: the submission is {queue.get(sessions, sid).state!r}", 409)
    if action.apply is not None:
        try:
            action.apply(cfg, sub)
        except BaseException:
            queue.transition(sessions, sid, (action.target,), sub.state, who.actor, note=f"{name} failed; undone")
            raise
    return queue.get(sessions, sid)
