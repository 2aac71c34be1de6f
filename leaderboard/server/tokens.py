"""Submitter and maintainer tokens: issued once, stored hashed, revocable.

A token is ``cvb_`` + 32 random bytes (URL-safe base64). The database keeps only its SHA-256: a token has 256
bits of entropy, so a fast hash is enough (no password stretching needed) and lets a request be authenticated
by one indexed lookup. The token is printed once by ``leaderboard token add`` and can never be shown again;
``token list`` shows its first characters (``hint``) so a maintainer can tell tokens apart.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update

from cvit_bench.errors import CvitError

from .db import ROLES, TokenRow, log_action, utc_now

PREFIX = "cvb_"


@dataclass(frozen=True)
class Principal:
    """Who is making a request."""

    token_id: int
    name: str
    role: str

    @property
    def is_maintainer(self) -> bool:
        return self.role == "maintainer"

    @property
    def actor(self) -> str:
        return f"{self.name} ({self.role} #{self.token_id})"


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    role: str
    hint: str
    created_utc: str
    revoked_utc: str | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_token(sessions, name: str, role: str = "submitter") -> tuple[TokenInfo, str]:
    """Issue a token for ``name``; returns its record and the token itself (shown once, stored only hashed)."""
    name = name.strip()
    if not name or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise CvitError("the token's NAME_OR_EMAIL must be 1-200 printable characters")
    if role not in ROLES:
        raise CvitError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    token = PREFIX + secrets.token_urlsafe(32)
    with sessions.begin() as s:
        row = TokenRow(name=name, role=role, token_sha256=token_hash(token), hint=token[:10], created_utc=utc_now())
        s.add(row)
        s.flush()
        log_action(s, None, "cli", "token add", f"#{row.id} {name} ({role})")
        info = _info(row)
    return info, token


def revoke_token(sessions, token_id: int) -> TokenInfo:
    with sessions.begin() as s:
        row = s.get(TokenRow, token_id)
        if row is None:
            raise CvitError(f"no token #{token_id} (see `leaderboard token list`)")
        if row.revoked_utc is None:
            row.revoked_utc = utc_now()
            log_action(s, None, "cli", "token revoke", f"#{row.id} {row.name}")
        return _info(row)


def list_tokens(sessions) -> list[TokenInfo]:
    with sessions() as s:
        return [_info(r) for r in s.scalars(select(TokenRow).order_by(TokenRow.id))]


def authenticate(sessions, token: str | None) -> Principal | None:
    """The principal of a live (not revoked) token, or None."""
    if not token or not token.startswith(PREFIX) or len(token) > 100:
        return None
    digest = token_hash(token)
    with sessions() as s:
        row = s.scalars(select(TokenRow).where(TokenRow.token_sha256 == digest)).first()
    # The index lookup already matched; compare again in constant time for good measure.
    if row is None or row.revoked_utc is not None or not hmac.compare_digest(row.token_sha256, digest):
        return None
    return Principal(token_id=row.id, name=row.name, role=row.role)


def touch(session, token_id: int, now: float) -> None:
    """Take the token's row lock (SQLite: the write lock) before counting its submissions (see :mod:`.queue`)."""
    session.execute(update(TokenRow).where(TokenRow.id == token_id).values(last_used=now))


def _info(row: TokenRow) -> TokenInfo:
    return TokenInfo(id=row.id, name=row.name, role=row.role, hint=row.hint, created_utc=row.created_utc,
                     revoked_utc=row.revoked_utc)
