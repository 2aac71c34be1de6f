"""File I/O at the edges: atomic writes, hashing, JSON reading with precise errors, JSONL append."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import CvitError, DataError, MissingFileError


def _umask_mode() -> int:
    # mkstemp creates 0600 files; written outputs (reports, sites, data) get the usual permissions instead.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def naming_path(path: str | os.PathLike) -> Iterator[None]:
    """An OS error while writing ``path`` (disk full, quota, read-only file system) carries that path, so the
    CLI reports it as the user's problem (exit 2) naming the file, not as a bug."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder + rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _umask_mode())
        with os.fdopen(fd, "wb") as fh, naming_path(path):
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def ensure_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create the output folder ``path`` (and parents) before any work, or refuse with a message naming it:
    a file in the way, or no permission, is found before minutes of work, not after."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CvitError(f"{path}: the {what} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CvitError(f"{path}: cannot create the {what}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CvitError(f"{path}: the {what} is not writable")
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_if_changed(path: str | os.PathLike, text: str) -> bool:
    """:func:`atomic_write_text` unless ``path`` already holds exactly ``text`` (its mtime then stays);
    returns whether it wrote. A rerun with nothing to do leaves its outputs untouched."""
    data = text.encode("utf-8")
    try:
        if Path(path).read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write_bytes(path, data)
    return True


def dumps_json(obj: Any) -> str:
    """Canonical JSON used for every file we write (stable key order, UTF-8, trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed onto ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _umask_mode())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class NonFiniteNumber(ValueError):
    """A JSON number that is not a finite float (``NaN``, ``Infinity``, or a literal like ``1e309``)."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumber(text)
    return value


def _no_constant(text: str) -> float:
    raise NonFiniteNumber(text)


def read_json(path: str | os.PathLike, what: str, *, finite: bool = False) -> Any:
    """Read a JSON file; a missing file names ``what`` it is, a malformed one the line and column.

    ``finite`` refuses ``NaN``/``Infinity`` and numbers that overflow a float (files whose numbers are
    computed with or compared against, e.g. results.json)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, what)
    hooks = {"parse_float": _finite_float, "parse_constant": _no_constant} if finite else {}
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read(), **hooks)
    except NonFiniteNumber as exc:
        raise DataError(f"{exc} is not a finite number (NaN, Infinity and overflowing numbers are refused)",
                        file=path) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", file=path) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte {exc.start})", file=path) from None
    except RecursionError:
        raise DataError("JSON nested too deeply to read", file=path) from None


def iter_jsonl(path: str | os.PathLike, *, tolerate_truncated_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` from a JSON Lines file.

    A last line without its newline that does not parse is the mark of an interrupted append; with
    ``tolerate_truncated_tail`` it is skipped (the runner resumes past it), otherwise it is an error.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    last = len(lines) - 1
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if i == last and tolerate_truncated_tail:
                return
            why = f"{exc.msg} (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else f"not UTF-8 text (byte {exc.start})"
            raise DataError(f"malformed JSON line: {why}", file=path, record=f"line {i + 1}") from None
        except RecursionError:
            raise DataError("JSON nested too deeply to read", file=path, record=f"line {i + 1}") from None
        if not isinstance(obj, dict):
            raise DataError("each line must be a JSON object", file=path, record=f"line {i + 1}")
        yield i + 1, obj


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return False


class JsonlAppender:
    """Append JSON objects to a JSONL file, flushing (and fsyncing) per batch so a crash loses at most a batch.

    If the file ends in a truncated line (no newline), that tail is cut off before appending, so the file is
    always a sequence of whole lines plus at most one partial line from the very last write. A last line that
    is a complete JSON object and lacks only its newline (written by another tool, or a crash between the two)
    is kept and completed: readers already count it as done, so cutting it would lose a finished sample.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._fh = open(self.path, "ab")

    def _repair_tail(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                if _is_json_object(data[cut:]):
                    fh.write(b"\n")
                else:
                    fh.truncate(cut)

    def write_many(self, objs: Iterable[dict]) -> None:
        payload = b"".join(
            (json.dumps(o, ensure_ascii=False, sort_keys=True, allow_nan=False) + "\n").encode("utf-8") for o in objs
        )
        if payload:
            with naming_path(self.path):
                self._fh.write(payload)
                self._fh.flush()
                os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ folder replace
# A folder output (a prepared benchmark, a site) is built in a staging folder beside its final place and then
# swapped in, so readers see the complete old or the complete new folder, never a mix or nothing.
#
# Staging folders are named ``.<final name>.<purpose>-<random>`` and each has an owner lock file
# ``<staging>.lock`` (``filelock``), taken *before* the folder exists and held while the work runs. A staging
# folder whose lock can be taken has no live owner (its process was killed): the next run removes it.

RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system lacks it."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _staging_prefix(final: Path, purpose: str) -> str:
    return f".{final.name}.{purpose}-"


def clean_stale_staging(final: Path, purpose: str) -> list[Path]:
    """Remove staging folders of ``final`` left by killed runs (their owner lock is free); put back a ``final``
    that a crash between the two renames of the fallback swap left only under ``.<name>.old-*``. Returns what
    was removed."""
    from filelock import FileLock, Timeout

    parent = final.parent
    if not parent.is_dir():
        return []
    removed = []
    for prefix in (_staging_prefix(final, purpose), _staging_prefix(final, "old")):
        for path in sorted(parent.glob(prefix + "*")):
            if path.suffix == ".lock" or not path.is_dir():
                continue
            lock_path = path.with_name(path.name + ".lock")
            if lock_path.exists():
                lock = FileLock(str(lock_path), timeout=0)
                try:
                    lock.acquire()
                except Timeout:
                    continue                      # a live run owns it
                try:
                    removed.append(_discard_staging(path, final, prefix))
                finally:
                    lock.release()
                lock_path.unlink(missing_ok=True)
            else:                                 # created without an owner lock (an older cvit-bench)
                removed.append(_discard_staging(path, final, prefix))
        for lock_path in parent.glob(prefix + "*.lock"):       # owner killed before creating its folder
            if not lock_path.with_suffix("").exists():
                lock = FileLock(str(lock_path), timeout=0)
                try:
                    lock.acquire()
                except Timeout:
                    continue
                lock.release()
                lock_path.unlink(missing_ok=True)
    return [p for p in removed if p is not None]


def _discard_staging(path: Path, final: Path, prefix: str) -> Path | None:
    if prefix.endswith(".old-") and not final.exists() and (path / final.name).exists():
        os.replace(path / final.name, final)     # the old folder comes back
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    return path


@contextlib.contextmanager
def staged_folder(final: str | os.PathLike, purpose: str) -> Iterator[Path]:
    """Yield an empty staging folder beside ``final``; on success its content replaces ``final`` at once
    (an atomic exchange where the system has one), on error (or Ctrl-C) it is removed and ``final`` is left
    as it was. Stale staging folders of earlier killed runs are removed first."""
    import shutil

    from filelock import FileLock

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(final, purpose)
    fd, lock_file = tempfile.mkstemp(prefix=_staging_prefix(final, purpose), suffix=".lock", dir=final.parent)
    os.close(fd)
    stage = Path(lock_file[: -len(".lock")])
    lock = FileLock(lock_file, timeout=0)
    lock.acquire()
    try:
        stage.mkdir()
        try:
            yield stage
            replace_folder(stage, final)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    finally:
        lock.release()
        Path(lock_file).unlink(missing_ok=True)


def replace_folder(new: Path, final: Path) -> None:
    """Put folder ``new`` at ``final``; what was at ``final`` ends up at ``new`` (the caller removes it)."""
    if not final.exists():
        os.rename(new, final)
        return
    if _exchange(new, final):
        return
    # Fallback: two renames; a crash between them leaves the old folder under .<name>.old-*, which
    # clean_stale_staging puts back on the next run.
    old = Path(tempfile.mkdtemp(prefix=_staging_prefix(final, "old"), dir=final.parent))
    os.replace(final, old / final.name)
    os.replace(new, final)
    os.replace(old, new)
