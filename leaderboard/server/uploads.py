"""Uploads: a multipart body streamed to disk with the size limit checked while reading, hashed on the way;
then the bundle's ``submission.json`` read safely to show its meta.yaml fields (nothing else is extracted).

The body is never held in memory: each chunk of the ``bundle`` part is written to ``<job>/upload.part`` and fed
to SHA-256; once more than ``max_bytes`` arrived the upload stops with :class:`TooLarge` (a 10 GB body is cut off
at the limit). Other form fields (the CSRF token) are small text, at most :data:`MAX_FIELD_BYTES` each.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from ..bundle import open_bundle
from ..limits import Limits

MAX_FIELD_BYTES = 4096
FILE_FIELD = "bundle"


class UploadError(Exception):
    """A refused upload, with the HTTP status to answer and a message for the submitter."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)


class TooLarge(UploadError):
    status = 413


@dataclass
class Upload:
    path: Path | None = None            # the bundle, once complete
    size: int = 0
    sha256: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


def content_type_boundary(content_type: str | None) -> bytes:
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError("send the bundle as multipart/form-data with a file field named 'bundle'")
    return params[b"boundary"]


async def receive_upload(chunks: AsyncIterator[bytes], content_type: str | None, dest: Path, max_bytes: int) -> Upload:
    """Parse a multipart body from ``chunks``; the ``bundle`` file part goes to ``dest`` (via ``dest.part``)."""
    boundary = content_type_boundary(content_type)
    partial = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    up = Upload()
    digest = hashlib.sha256()
    state: dict[str, Any] = {"headers": {}, "name": None, "is_file": False, "buf": bytearray(), "hfield": b"",
                             "hvalue": b"", "out": None, "files": 0}

    def on_part_begin() -> None:
        state.update(headers={}, name=None, is_file=False, buf=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["hfield"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["hvalue"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["hfield"].lower()] = state["hvalue"]
        state["hfield"], state["hvalue"] = b"", b""

    def on_headers_finished() -> None:
        _, params = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        state["is_file"] = b"filename" in params
        if state["is_file"]:
            if name != FILE_FIELD or state["files"]:
                raise UploadError("exactly one file field, named 'bundle', is expected")
            state["files"] += 1
            state["out"] = open(partial, "wb")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if state["is_file"]:
            up.size += len(chunk)
            if up.size > max_bytes:
                raise TooLarge(f"the bundle is larger than this board's limit of {max_bytes} bytes "
                               f"({max_bytes / (1 << 20):.0f} MiB); the upload was cut off")
            digest.update(chunk)
            state["out"].write(chunk)
        else:
            state["buf"] += chunk
            if len(state["buf"]) > MAX_FIELD_BYTES:
                raise UploadError(f"form field {state['name']!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end() -> None:
        if state["is_file"]:
            out = state.pop("out")
            out.flush()
            os.fsync(out.fileno())
            out.close()
            state["out"] = None
        elif state["name"]:
            up.fields[state["name"]] = bytes(state["buf"]).decode("utf-8", "replace")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    try:
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except UploadError:
        _discard(state, partial)
        raise
    except Exception as exc:              # python-multipart's parse errors: a malformed body
        _discard(state, partial)
        raise UploadError(f"malformed multipart body ({type(exc).__name__})") from None
    if not state["files"] or state.get("out") is not None:
        _discard(state, partial)
        raise UploadError("no complete file field named 'bundle' in the upload")
    os.replace(partial, dest)
    up.path, up.sha256 = dest, digest.hexdigest()
    return up


def _discard(state: dict[str, Any], partial: Path) -> None:
    out = state.get("out")
    if out is not None:
        out.close()
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()


def read_meta(path: Path, limits: Limits, workdir: Path) -> dict[str, Any]:
    """The bundle's ``submission.json`` after the CLI's archive checks (steps 1-3 of ``leaderboard submit``:
    every header, the listing, hashes and sizes, in one streamed pass by
    :func:`~cvit_bench.leaderboard.bundle.open_bundle`), so a hostile archive is refused at upload with the
    CLI's reason. The extraction goes to ``workdir`` and is removed at once; the worker repeats these checks
    on its own (a job never trusts an earlier process)."""
    opened = open_bundle(path, limits, workdir=workdir)
    shutil.rmtree(opened.root, ignore_errors=True)
    return opened.submission
