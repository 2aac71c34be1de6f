"""Submission bundles: ``pack`` a run output folder into one ``.tar.gz``; open an untrusted bundle safely.

Bundle layout (every path relative to the archive root)::

    submission.json                      # schema_version, tier, meta (meta.yaml), files: [{path, sha256, bytes, rows}]
    results.json                         # what `cvit-bench evaluate/score` wrote
    predictions/<stage>/<task>.jsonl     # tier "rescored" only: every prediction file of the run

Packing is deterministic (sorted members, mtime 0, owner 0, mode 0644, gzip mtime 0): packing the same run twice
gives the same bytes, so the bundle's sha256 identifies a submission.

Opening is defensive: the archive's member list is checked completely **before anything is extracted**:
only regular files and folders; no absolute path, drive letter, backslash or ``..`` part; no symlink, hard link,
device or FIFO; no duplicate name; at most :attr:`Limits.max_files` members, each at most
:attr:`Limits.max_file_bytes`, together at most :attr:`Limits.max_total_bytes`, from an archive of at most
:attr:`Limits.max_bundle_bytes`. Extraction then writes each file ourselves (``tarfile.extractall`` is never
used) into a fresh temporary folder outside the board, reading no more than the declared size.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from cvit_bench import __version__
from cvit_bench.errors import CvitError, DataError, MissingFileError
from cvit_bench.files import atomic_write_bytes, dumps_json, read_json, sha256_bytes, sha256_file

from .limits import Limits
from .schema import RESULTS_NAME, SUBMISSION_NAME, SUBMISSION_SCHEMA_VERSION, validate_meta, validate_submission

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
    read_json(run_out / RESULTS_NAME, "results.json of the run")   # malformed JSON is caught here, not on the board
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
@dataclass
class OpenedBundle:
    """A bundle checked and extracted into ``root`` (a temporary folder the caller removes)."""

    path: Path
    sha256: str
    root: Path
    submission: dict[str, Any]


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


def check_members(members: Iterable[tarfile.TarInfo], limits: Limits, where: str) -> list[tarfile.TarInfo]:
    """Refuse unsafe members before extraction; returns the regular files (see the module docstring).

    ``members`` may be the open archive itself: each header is checked as it streams in, so an oversized or
    hostile member stops the scan before its data is decompressed."""
    seen: set[str] = set()
    files, total = [], 0
    for count, m in enumerate(members, start=1):
        if count > limits.max_files:
            raise DataError(f"more than {limits.max_files} archive members, the limit (nothing was extracted)", file=where)
        why = _unsafe_name(m.name)
        if why:
            raise DataError(f"refused: {why} (nothing was extracted)", file=where, record=f"member {m.name!r}")
        if m.issym() or m.islnk():
            raise DataError(f"refused: link to {m.linkname!r} (nothing was extracted)", file=where,
                            record=f"member {m.name!r}")
        if not (m.isfile() or m.isdir()):
            raise DataError("refused: device, FIFO or other special file (nothing was extracted)", file=where,
                            record=f"member {m.name!r}")
        norm = PurePosixPath(m.name).as_posix()          # "./a" and "a" are the same member
        if norm in seen:
            raise DataError("refused: member appears twice", file=where, record=f"member {m.name!r}")
        seen.add(norm)
        if m.isfile():
            if m.size > limits.max_file_bytes:
                raise DataError(f"refused: {m.size} bytes, more than the per-file limit of {limits.max_file_bytes}",
                                file=where, record=f"member {m.name!r}")
            total += m.size
            if total > limits.max_total_bytes:
                raise DataError(f"refused: more than {limits.max_total_bytes} bytes uncompressed in total", file=where)
            files.append(m)
    return files


def open_bundle(path: str | os.PathLike, limits: Limits = Limits(), *, workdir: str | os.PathLike | None = None) -> OpenedBundle:
    """Check and extract an untrusted bundle into a new temporary folder; validate ``submission.json``."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise MissingFileError(path, "submission bundle (.tar.gz from `cvit-bench leaderboard pack`)")
    size = path.stat().st_size
    if size > limits.max_bundle_bytes:
        raise DataError(f"refused: the bundle has {size} bytes, more than the limit of {limits.max_bundle_bytes}", file=where)
    root: Path | None = None
    try:
        with tarfile.open(path, mode="r:*") as tf:
            files = check_members(tf, limits, where)     # streamed: refuses at the first bad header
            root = Path(tempfile.mkdtemp(prefix="cvit-bundle-", dir=workdir))
            for m in files:
                target = root / PurePosixPath(m.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                data = src.read(m.size + 1) if src is not None else b""
                if len(data) != m.size:
                    raise DataError("refused: member size differs from its header", file=where, record=f"member {m.name!r}")
                target.write_bytes(data)
        submission = validate_submission(read_json(root / SUBMISSION_NAME, "submission.json inside the bundle"),
                                         f"{where}:{SUBMISSION_NAME}")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        _cleanup(root)
        raise DataError(f"not a readable .tar.gz bundle: {exc}", file=where) from None
    except BaseException:
        _cleanup(root)
        raise
    return OpenedBundle(path=path, sha256=sha256_file(path), root=root, submission=submission)


def _cleanup(root: Path | None) -> None:
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


def verify_manifest(bundle: OpenedBundle) -> None:
    """Every listed file is present with its sha256 and row count; nothing unlisted is in the bundle."""
    where = f"{bundle.path}:{SUBMISSION_NAME}"
    listed = {f["path"]: f for f in bundle.submission["files"]}
    present = {p.relative_to(bundle.root).as_posix() for p in bundle.root.rglob("*") if p.is_file()}
    present.discard(SUBMISSION_NAME)
    extra = sorted(present - set(listed))
    if extra:
        raise DataError(f"files in the bundle that submission.json does not list: {', '.join(extra[:5])}", file=where,
                        field="files")
    for rel, info in listed.items():
        file = bundle.root / rel
        if not file.is_file():
            raise DataError("listed but missing from the bundle", file=where, record=rel, field="files")
        data = file.read_bytes()
        digest = sha256_bytes(data)
        if digest != info["sha256"]:
            raise DataError(f"hash mismatch: the file's sha256 is {digest}, submission.json says {info['sha256']} "
                            "(the file was changed after packing)", file=where, record=rel, field="sha256")
        if len(data) != info["bytes"]:
            raise DataError(f"size mismatch: {len(data)} bytes, submission.json says {info['bytes']}", file=where,
                            record=rel, field="bytes")
        if info["rows"] is not None and count_rows(data) != info["rows"]:
            raise DataError(f"row count mismatch: {count_rows(data)} rows, submission.json says {info['rows']}",
                            file=where, record=rel, field="rows")
