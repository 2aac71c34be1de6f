"""The server's database: tokens, submissions (the durable queue) and the moderation action log.

SQLite by default (one file beside the board, WAL mode so the web server and workers read while one writes,
a busy timeout so concurrent writers wait instead of failing); any SQLAlchemy URL (PostgreSQL) for a hosted
deployment. Every state change is one short transaction whose ``UPDATE ... WHERE state = <expected>`` makes it
safe under concurrency on both engines: two workers never claim the same job, a submission is never approved
twice (the loser's update matches no row).

Tables: ``tokens`` (name, role, sha256 of the token, created, revoked), ``submissions`` (one row per upload:
state, reason, owner token, bundle sha256, the meta.yaml fields, the lease), ``actions`` (who did what when,
append-only).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

from sqlalchemy import Float, ForeignKey, Integer, String, Text, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

# Submission states, in the order a submission goes through them.
UPLOADED = "uploaded"                 # form upload, not yet confirmed by its submitter (the API skips it)
QUEUED = "queued"
VERIFYING = "verifying"
RESCORING = "re-scoring"
AWAITING = "awaiting approval"
PUBLISHED = "published"
REJECTED = "rejected"
HIDDEN = "hidden"                     # published, then taken off the public pages by a maintainer
WITHDRAWN = "withdrawn"               # taken off the board for good
IN_PROGRESS = (VERIFYING, RESCORING)
STATES = (UPLOADED, QUEUED, VERIFYING, RESCORING, AWAITING, PUBLISHED, REJECTED, HIDDEN, WITHDRAWN)
FINAL_STATES = (PUBLISHED, REJECTED, WITHDRAWN)
ROLES = ("submitter", "maintainer")


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Base(DeclarativeBase):
    pass


class TokenRow(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    hint: Mapped[str] = mapped_column(String(16))          # the token's first characters, to tell tokens apart
    created_utc: Mapped[str] = mapped_column(String(20))
    revoked_utc: Mapped[str | None] = mapped_column(String(20), nullable=True)
    last_used: Mapped[float] = mapped_column(Float, default=0.0)


class SubmissionRow(Base):
    __tablename__ = "submissions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id"), index=True)
    state: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)       # why it was refused (the CLI's message)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)         # the maintainer's note
    bytes: Mapped[int] = mapped_column(Integer, default=0)
    bundle_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    meta_json: Mapped[str | None] = mapped_column(Text, nullable=True)    # the bundle's meta.yaml fields
    entry_id: Mapped[str | None] = mapped_column(String(80), nullable=True, index=True)
    created: Mapped[float] = mapped_column(Float, index=True)
    updated: Mapped[float] = mapped_column(Float)
    lease_owner: Mapped[str | None] = mapped_column(String(80), nullable=True)
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class ActionRow(Base):
    __tablename__ = "actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    submission_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    actor: Mapped[str] = mapped_column(String(220))
    at_utc: Mapped[str] = mapped_column(String(20))
    at: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(40))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the tables created (idempotent)."""
    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    return engine


def make_sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def log_action(session, submission_id: str | None, actor: str, action: str, note: str | None = None) -> None:
    """Append to the action log (in the caller's transaction, so the log and the change commit together)."""
    now = time.time()
    session.add(ActionRow(submission_id=submission_id, actor=actor, at=now,
                          at_utc=datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                          action=action, note=note))
