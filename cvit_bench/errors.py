"""Errors that name what is wrong: the file, the record and the field.

Every error a user can cause derives from :class:`CvitError`; the CLI maps it to exit code 2 and prints
only its message (no traceback), so the message must be complete on its own.
"""
from __future__ import annotations

import unicodedata
from os import PathLike


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control, format (invisible) and bidirectional-override characters shown as ``\\xNN`` /
    ``\\uNNNN`` escapes, so that an attacker-chosen name (an archive member, a record id) cannot move the
    cursor, recolour the terminal or reorder what the reader sees. ``keep_newlines`` keeps line breaks and tabs
    of our own multi-line messages."""
    out = []
    for ch in text:
        if keep_newlines and ch in "\n\t":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def known_version(found: object, known: tuple[int, ...]) -> bool:
    """An exact schema version: an int (``True == 1`` in Python, so booleans are refused explicitly) in ``known``."""
    return type(found) is int and found in known


class CvitError(Exception):
    """A user-facing error: bad input, a missing file, an inconsistent run."""


class DataError(CvitError):
    """Bad data in a file: says which file, which record and which field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | PathLike | None = None,
        record: object | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.record = record
        self.field = field
        self.reason = message
        where = []
        if self.file:
            where.append(escape_controls(self.file))
        if record is not None:
            where.append(f"record {escape_controls(str(record))}")
        if field is not None:
            where.append(f"field {escape_controls(repr(field))}")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class MissingFileError(DataError):
    """An expected input file does not exist; the message says what the file is."""

    def __init__(self, path: str | PathLike, what: str) -> None:
        super().__init__(f"missing {what} (expected at this path)", file=path)


class SchemaVersionError(DataError):
    """A versioned file has a schema_version this release does not know."""

    def __init__(self, path: str | PathLike, found: object, known: tuple[int, ...], kind: str) -> None:
        super().__init__(
            f"unknown {kind} schema_version {found!r}; this cvit-bench reads {', '.join(map(str, known))}"
            " (upgrade cvit-bench or re-create the file)",
            file=path,
        )


class UnknownNameError(CvitError):
    """A name (task, metric, method, backend, ...) that is not registered."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(valid))}")
