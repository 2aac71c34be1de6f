"""Submission bundles: ``pack`` a run output folder into one ``.tar.gz``; open an untrusted bundle safely.

Bundle layout (every path relative to the archive root)::

    submission.json                      # schema_version, tier, meta (meta.yaml), files: [{path, sha256, bytes, rows}]
    results.json                         # what `cvit-bench evaluate/score` wrote
    predictions/<stage>/<task>.jsonl     # tier "rescored" only: every prediction file of the run

Packing is deterministic (sorted members, mtime 0, owner 0, mode 0644, gzip mtime 0): packing the same run twice
gives the same bytes, so the bundle's sha256 identifies a submission.

Opening is defensive and streams the archive once, header by header (``tarfile`` stream mode: nothing is
held in memory but one 1 MiB block, nothing is decompressed that is not needed):

1. every header: only regular files and folders; no absolute path, drive letter, backslash, NUL or ``..``
   part; no symlink, hard link, device or FIFO; no duplicate name; at most :attr:`Limits.max_files` members;
   the archive at most :attr:`Limits.max_bundle_bytes`;
2. ``submission.json`` must be the first file (``pack`` writes it first); it is read (at most
   :data:`MAX_SUBMISSION_BYTES`) and validated against the schema before any other member is looked at, and
   its file list must fit the limits (each file at most :attr:`Limits.max_file_bytes`, all together at most
   :attr:`Limits.max_total_bytes`);
3. every later file must be listed there with the size its header states; an unlisted member is refused at
   its header, before its data is decompressed (a few-MB bundle of gigabytes of zeros costs nothing);
   folders are accepted only as parents of listed files;
4. each listed file is copied, in blocks, into a fresh temporary folder outside the board (``extractall`` is
   never used) while its sha256 and row count are computed; a mismatch with ``submission.json`` refuses it;
5. at the end, every listed file must have been present.

Errors name the bundle and the member (``BUNDLE:predictions/1/x.jsonl``), never the temporary folder:
:func:`bundle_errors` maps later errors about extracted files back to that form.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from cvit_bench import __version__
from cvit_bench.errors import CvitError, DataError, MissingFileError
from cvit_bench.files import NonFiniteNumber, atomic_write_bytes, dumps_json, read_json, sha256_bytes

from .limits import MiB, Limits
from .schema import (RESULTS_NAME, SUBMISSION_NAME, SUBMISSION_SCHEMA_VERSION, validate_meta, validate_results,
                     validate_submission)

# ----------------------------------------------------------------------------------------------------- pack
def load_meta(meta: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    """``meta.yaml`` (or an already parsed mapping), validated against the schema's ``meta`` part."""
    if isinstance(meta, dict):
        return validate_meta(meta, "metadata")
    path = Path(meta)
    if not path.is_file():
        raise MissingFileError(path, "leaderboard metadata (meta.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"malformed YAML: {exc}", file=path) from None
    return validate_meta(data, str(path))


def count_rows(data: bytes) -> int:
    """Rows of a JSON Lines file = non-blank lines."""
    return sum(1 for line in data.split(b"\n") if line.strip())


class RowCounter:
    """:func:`count_rows` over a stream of blocks (a line may span blocks)."""

    def __init__(self) -> None:
        self.rows = 0
        self._open_line_has_text = False

    def update(self, block: bytes) -> None:
        parts = block.split(b"\n")
        for part in parts[:-1]:
            if self._open_line_has_text or part.strip():
                self.rows += 1
            self._open_line_has_text = False
        self._open_line_has_text = self._open_line_has_text or bool(parts[-1].strip())

    def total(self) -> int:
        return self.rows + (1 if self._open_line_has_text else 0)


def bundle_files(run_out: Path, *, reported: bool, predictions: Path | None = None) -> list[tuple[str, Path]]:
    """(archive path, file) of everything a bundle carries from a run output folder, sorted.

    ``predictions`` defaults to ``run_out/predictions`` (what ``evaluate --out`` writes); ``score --out`` keeps
    the predictions where they were, so pass that folder."""
    results = run_out / RESULTS_NAME
    if not results.is_file():
        raise MissingFileError(results, "results.json of the run (cvit-bench evaluate/score --out writes it)")
    files = [(RESULTS_NAME, results)]
    if reported:
        return files
    pred_root = predictions if predictions is not None else run_out / "predictions"
    preds = sorted(p for p in pred_root.glob("*/*.jsonl") if p.is_file()) if pred_root.is_dir() else []
    if not preds:
        raise CvitError(f"{pred_root}: no prediction files (<stage>/<task>.jsonl); a re-scored submission needs them "
                        "(pass --reported to submit numbers only)")
    files += [(f"predictions/{p.parent.name}/{p.name}", p) for p in preds]
    return files


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
    info.uname = info.gname = ""
    tf.addfile(info, io.BytesIO(data))


def pack(run_out: str | os.PathLike, meta: str | os.PathLike | dict[str, Any], out: str | os.PathLike, *,
         reported: bool = False, predictions: str | os.PathLike | None = None) -> Path:
    """Write the bundle of ``run_out`` (results.json + predictions) with ``meta`` to ``out``; returns ``out``."""
    run_out, out = Path(run_out), Path(out)
    meta_doc = load_meta(meta)
    # What the board would refuse is refused here, before a bundle exists (malformed JSON, NaN, schema).
    validate_results(read_json(run_out / RESULTS_NAME, "results.json of the run", finite=True), str(run_out / RESULTS_NAME))
    entries = []
    blobs: dict[str, bytes] = {}
    for name, path in bundle_files(run_out, reported=reported,
                                           predictions=Path(predictions) if predictions is not None else None):
        data = path.read_bytes()
        blobs[name] = data
        entries.append({"path": name, "sha256": sha256_bytes(data), "bytes": len(data),
                        "rows": None if name == RESULTS_NAME else count_rows(data)})
    submission = {"schema_version": SUBMISSION_SCHEMA_VERSION, "tier": "reported" if reported else "rescored",
                  "cvit_bench_version": __version__, "meta": meta_doc, "files": entries}
    validate_submission(submission, "submission.json (being packed)")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _tar_add(tf, SUBMISSION_NAME, dumps_json(submission).encode("utf-8"))
        for name in sorted(blobs):
            _tar_add(tf, name, blobs[name])
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    atomic_write_bytes(out, compressed.getvalue())
    return out


# ----------------------------------------------------------------------------------------------------- open
MAX_SUBMISSION_BYTES = 4 * MiB
BLOCK = 1 << 20


@dataclass
class OpenedBundle:
    """A bundle checked and extracted into ``root`` (a temporary folder the caller removes)."""

    path: Path
    sha256: str
    root: Path
    submission: dict[str, Any]

    def member_name(self, file: str | os.PathLike) -> str:
        """``BUNDLE:member`` for a path inside :attr:`root` (what messages show), else the path itself."""
        try:
            rel = Path(file).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(file)
        return f"{self.path}:{rel}"


@contextlib.contextmanager
def bundle_errors(bundle: OpenedBundle) -> Iterator[None]:
    """Re-raise a :class:`DataError` about an extracted file as one about ``BUNDLE:member``: the temporary
    folder is gone when the message is read."""
    try:
        yield
    except DataError as exc:
        if exc.file is None or bundle.member_name(exc.file) == exc.file:
            raise
        raise DataError(_unroot(exc.reason, bundle), file=bundle.member_name(exc.file), record=exc.record,
                        field=exc.field) from None
    except CvitError as exc:                      # a plain message that may still spell the temporary path
        text = _unroot(str(exc), bundle)
        if text == str(exc):
            raise
        raise CvitError(text) from None


def _unroot(text: str, bundle: OpenedBundle) -> str:
    for root in {str(bundle.root), str(bundle.root.resolve())}:
        text = text.replace(root + os.sep, f"{bundle.path}:").replace(root, str(bundle.path))
    return text


def _unsafe_name(name: str) -> str | None:
    """Why an archive member name is refused, or None when it is a plain relative path."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if "\\" in name:
        return "backslash in path"
    if any(part == ".." for part in PurePosixPath(name).parts):
        return "'..' in path"
    if "\x00" in name:
        return "NUL in path"
    return None


def check_header(m: tarfile.TarInfo, where: str) -> str:
    """Refuse an unsafe member header; returns its normalised name (``./a`` and ``a`` are one member)."""
    why = _unsafe_name(m.name)
    if why:
        raise DataError(f"refused: {why} (nothing was stored)", file=where, record=f"member {m.name!r}")
    if m.issym() or m.islnk():
        raise DataError(f"refused: link to {m.linkname!r} (nothing was stored)", file=where, record=f"member {m.name!r}")
    if not (m.isfile() or m.isdir()):
        raise DataError("refused: device, FIFO or other special file (nothing was stored)", file=where,
                        record=f"member {m.name!r}")
    return PurePosixPath(m.name).as_posix()


def _parse_submission(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data, parse_constant=lambda c: (_ for _ in ()).throw(NonFiniteNumber(c)))
    except (json.JSONDecodeError, UnicodeDecodeError, NonFiniteNumber) as exc:
        raise DataError(f"malformed JSON: {exc}", file=where) from None
    except RecursionError:
        raise DataError("JSON nested too deeply to read", file=where) from None
    return validate_submission(doc, where)


def _check_listing(files: dict[str, dict[str, Any]], limits: Limits, where: str) -> None:
    total = 0
    for rel, info in files.items():
        if info["bytes"] > limits.max_file_bytes:
            raise DataError(f"refused: {info['bytes']} bytes, more than the per-file limit of {limits.max_file_bytes}",
                            file=where, record=rel, field="bytes")
        total += info["bytes"]
    if total > limits.max_total_bytes:
        raise DataError(f"refused: the listed files hold {total} bytes, more than the limit of {limits.max_total_bytes}",
                        file=where, field="files")
    if len(files) + 1 > limits.max_files:
        raise DataError(f"more than {limits.max_files} archive members, the limit (nothing was stored)", file=where,
                        field="files")


def _extract(src, target: Path, info: dict[str, Any], where: str, rel: str) -> None:
    """Copy one listed member in blocks, checking its sha256 and row count against ``submission.json``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, rows, size = hashlib.sha256(), RowCounter(), 0
    with open(target, "wb") as out:
        while block := src.read(min(BLOCK, info["bytes"] + 1 - size)):
            size += len(block)
            if size > info["bytes"]:
                break
            digest.update(block)
            rows.update(block)
            out.write(block)
    if size != info["bytes"]:
        raise DataError(f"size mismatch: the member holds {size} bytes, submission.json says {info['bytes']}",
                        file=where, record=rel, field="bytes")
    if digest.hexdigest() != info["sha256"]:
        raise DataError(f"hash mismatch: the file's sha256 is {digest.hexdigest()}, submission.json says "
                        f"{info['sha256']} (the file was changed after packing)", file=where, record=rel, field="sha256")
    if info["rows"] is not None and rows.total() != info["rows"]:
        raise DataError(f"row count mismatch: {rows.total()} rows, submission.json says {info['rows']}",
                        file=where, record=rel, field="rows")


def _stream_members(tf: tarfile.TarFile, limits: Limits, where: str, workdir: str | os.PathLike | None,
                    ) -> tuple[dict[str, Any], Path]:
    """Steps 1-5 of the module docstring over one pass of the archive; returns (submission, extraction root)."""
    submission: dict[str, Any] | None = None
    listed: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    folders: list[str] = []
    root: Path | None = None
    try:
        for count, m in enumerate(tf, start=1):
            if count > limits.max_files:
                raise DataError(f"more than {limits.max_files} archive members, the limit (nothing was stored)", file=where)
            name = check_header(m, where)
            if name in seen:
                raise DataError("refused: member appears twice", file=where, record=f"member {m.name!r}")
            seen.add(name)
            if m.isdir():
                folders.append(name)
                continue
            if submission is None:
                if name != SUBMISSION_NAME:
                    raise DataError(f"{SUBMISSION_NAME} must be the first file of the bundle (`cvit-bench leaderboard "
                                    f"pack` writes it first); found {m.name!r} before it", file=where)
                limit = min(MAX_SUBMISSION_BYTES, limits.max_file_bytes)
                if m.size > limit:
                    which = "per-file limit" if limit == limits.max_file_bytes else f"limit for {SUBMISSION_NAME}"
                    raise DataError(f"refused: {m.size} bytes, more than the {which} of {limit}", file=where,
                                    record=f"member {m.name!r}")
                data = tf.extractfile(m).read(m.size + 1)
                submission = _parse_submission(data, f"{where}:{SUBMISSION_NAME}")
                listed = {f["path"]: f for f in submission["files"]}
                _check_listing(listed, limits, f"{where}:{SUBMISSION_NAME}")
                root = Path(tempfile.mkdtemp(prefix="cvit-bundle-", dir=workdir))
                continue
            info = listed.get(name)
            if info is None:
                raise DataError(f"refused: member {m.name!r} is not listed in {SUBMISSION_NAME} (nothing was stored)",
                                file=where, field="files")
            if m.size != info["bytes"]:
                raise DataError(f"size mismatch: the archive header says {m.size} bytes, {SUBMISSION_NAME} says "
                                f"{info['bytes']}", file=where, record=name, field="bytes")
            src = tf.extractfile(m)
            _extract(src, root / PurePosixPath(name), info, where, name)
        if submission is None:
            raise DataError(f"no {SUBMISSION_NAME} in the bundle (make bundles with `cvit-bench leaderboard pack`)",
                            file=where)
        missing = sorted(set(listed) - seen)
        if missing:
            raise DataError("listed but missing from the bundle", file=f"{where}:{SUBMISSION_NAME}", record=missing[0],
                            field="files")
        parents = {str(PurePosixPath(p).parent) for rel in listed for p in [rel, str(PurePosixPath(rel).parent)]}
        stray = [f for f in folders if f not in parents and f != "."]
        if stray:
            raise DataError(f"refused: folder {stray[0]!r} is not the folder of a listed file", file=where,
                            field="files")
    except BaseException:
        _cleanup(root)
        raise
    return submission, root


def open_bundle(path: str | os.PathLike, limits: Limits = Limits(), *, workdir: str | os.PathLike | None = None) -> OpenedBundle:
    """Check and extract an untrusted bundle into a new temporary folder (see the module docstring)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise MissingFileError(path, "submission bundle (.tar.gz from `cvit-bench leaderboard pack`)")
    size = path.stat().st_size
    if size > limits.max_bundle_bytes:
        raise DataError(f"refused: the bundle has {size} bytes, more than the limit of {limits.max_bundle_bytes}", file=where)
    with open(path, "rb") as fh:
        # The bundle's sha256 comes from the very bytes that were checked (the file may be replaced meanwhile).
        reader = _HashingReader(fh)
        try:
            with tarfile.open(fileobj=reader, mode="r|*") as tf:
                submission, root = _stream_members(tf, limits, where, workdir)
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(f"not a readable .tar.gz bundle: {exc}", file=where) from None
        reader.drain()
    return OpenedBundle(path=path, sha256=reader.digest.hexdigest(), root=root, submission=submission)


class _HashingReader:
    """A read-only file object that hashes everything read through it."""

    def __init__(self, fh) -> None:
        self.fh, self.digest = fh, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.digest.update(data)
        return data

    def drain(self) -> None:
        while self.read(BLOCK):
            pass


def _cleanup(root: Path | None) -> None:
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
