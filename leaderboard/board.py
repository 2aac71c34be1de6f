"""A leaderboard on disk: board keys, entries, and where they are stored.

Layout of a board folder ``DIR``::

    DIR/submissions/<entry id>.json      # one entry (schema below), written atomically
    DIR/submissions/bundles/<sha256>.tar.gz   # every accepted bundle, by content, kept for audit and history
    DIR/submissions/.lock                # the board's write lock (``filelock``)
    DIR/data/                            # default prepared references (``prepare --out``); ``--data`` overrides

**Transactions** (:func:`publish_entry`): under the board lock, the ownership check, the serialised entry (a
number JSON cannot hold fails here, before any write), the bundle copy (content-addressed: a new name, so it
never overwrites another entry's audit copy) and finally one atomic rename of the entry file, the commit point.
A refusal or a crash before the rename leaves every entry and every bundle it names as it was (at most an
unreferenced bundle file remains after a crash at the very last step).

**Ownership** is an authenticated identity, never a string a bundle carries: an entry records its
``submitter`` (:class:`Submitter`): ``token`` with the id of the submission server's submitter token that sent
it, or ``contact`` with an identity the maintainer vouched for (``leaderboard submit --owner IDENTITY``).
Identities are compared normalised (:func:`normalise_identity`: Unicode NFKC, casefold, invisible format
characters dropped, whitespace collapsed), so ``Alice@Example.org`` and `` alice@example.org`` are one owner.
A submission whose id is an existing entry's replaces it only when it comes from the same owner, or the
maintainer passes ``force``. A bundle submitted without ``--owner`` (:func:`publish_entry` with
``verified=False``) may add a new entry (owned by its normalised contact, as claimed) but never replaces one:
the contact inside a bundle proves nothing. The replaced version moves into the new entry's ``history`` (newest
last) with its own bundle hash, submitter, submission date, the date it was replaced, who replaced it
(``replaced_by``) and whether the maintainer forced it (``forced``); its bundle stays in ``bundles/``. An entry
written before ownership was recorded (version 1, only a ``contact``) is owned by its normalised contact;
entries without submitter or contact (seeded, published numbers) belong to the maintainer.

**Board key** (docs/published-results.md, Board keys and Numbers that must never share a board): (benchmark, template set, base model, metric profile, variant).
Entries with different keys are never ranked in one table: single vs five templates, CVIT vs CoIN, 7B vs 13B,
compat vs standard. ``variant`` separates numbers of one setting that must still not be mixed (e.g. the ICCV
version of a paper whose v1 numbers differ); it is empty for re-scored entries.

**Entry id** = ``<slug of method name>-<12 hex of sha256(method name, sorted checkpoint hashes)>``: a submission
with the same method name and the same checkpoint hashes gets the same id and so replaces the earlier entry.

**Entry** (``schema_version`` 1): ``id``, ``tier`` (``rescored`` | ``reported``), ``kind`` (``method`` |
``reference``: reference rows are shown, never ranked), ``board``, ``method`` {name, family, description},
``base_model`` {name, revision}, ``trainable_params``, ``extra_data``, ``links``, ``contact``, ``tasks`` and
``final_row`` (per-task scores after the last stage), ``summary`` (AP, MAP, BWT, MIF, ...), ``summary_status``
per summary key (``recomputed`` | ``reported`` | ``reported, not recomputable``), ``flags`` (submitted numbers
that differ from the recomputed ones by more than 0.01), ``checkpoints``, ``source`` (citation, url, table,
grade ``primary`` | ``secondhand``), ``caveats``, ``results`` (the re-scored results.json, or null),
``submitted_utc``, ``bundle_sha256``; since version 2 also ``submitter`` and ``history`` (version 1 entries
are read with neither); ``seed`` (the training seed from meta.yaml, or null; absent in older entries).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from cvit_bench.errors import CvitError, DataError, SchemaVersionError, known_version
from cvit_bench.files import atomic_write_bytes, dumps_json, read_json
from cvit_bench.report.runs import slugify

ENTRY_SCHEMA_VERSION = 2
KNOWN_ENTRY_VERSIONS = (1, 2)
SUBMITTER_KINDS = ("contact", "token")
LOCK_TIMEOUT_S = 120.0
TIERS = ("rescored", "reported")
KINDS = ("method", "reference")
SUBMISSIONS = "submissions"
FLAG_TOLERANCE = 0.01
NOT_RECOMPUTABLE = "reported, not recomputable"


@dataclass(frozen=True, order=True)
class BoardKey:
    benchmark: str
    template_set: str
    base_model: str
    profile: str
    variant: str = ""

    def slug(self) -> str:
        parts = [f"{self.benchmark}-{self.template_set}", self.base_model, self.profile] + ([self.variant] if self.variant else [])
        return "--".join(slugify(p) for p in parts)

    def describe(self) -> str:
        text = f"{self.benchmark} · templates {self.template_set} · base model {self.base_model} · profile {self.profile}"
        return f"{text} · {self.variant}" if self.variant else text

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> BoardKey:
        try:
            return cls(**{k: str(data[k]) for k in ("benchmark", "template_set", "base_model", "profile")},
                       variant=str(data.get("variant") or ""))
        except (KeyError, TypeError) as exc:
            raise DataError(f"board key needs benchmark, template_set, base_model, profile ({exc})", file=where,
                            field="board") from None


def normalise_identity(text: str) -> str:
    """The form in which two contacts or owner identities are compared: NFKC (full-width ``ａ`` is ``a``),
    casefolded, invisible format characters (zero-width space, bidi controls) dropped, surrounding whitespace
    removed and inner runs of whitespace collapsed to one space."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    visible = "".join(c for c in folded if unicodedata.category(c) != "Cf")
    return " ".join(visible.split())


@dataclass(frozen=True)
class Submitter:
    """Who owns an entry: ``contact`` (an identity the maintainer vouched for with ``submit --owner``, or the
    claimed contact of the bundle that created the entry) or ``token`` (the id of the submission server's
    submitter token). Two submitters are the same only when both agree; contact ids are kept normalised."""

    kind: str
    id: str

    @classmethod
    def from_contact(cls, contact: str) -> Submitter:
        return cls("contact", normalise_identity(contact))

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Submitter:
        if not (isinstance(data, dict) and data.get("kind") in SUBMITTER_KINDS and isinstance(data.get("id"), str)
                and data["id"] and set(data) == {"kind", "id"}):
            raise DataError(f"must be {{kind: {' | '.join(SUBMITTER_KINDS)}, id: non-empty string}}", file=where,
                            field="submitter")
        # Entries written before contacts were normalised (only stripped and casefolded) compare the same way.
        return cls.from_contact(data["id"]) if data["kind"] == "contact" else cls(data["kind"], data["id"])

    def describe(self) -> str:
        return f"{self.kind} {self.id}"


class OwnershipError(CvitError):
    """A submission for an entry that belongs to someone else."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_str_map(values: Any, accepts: Callable[[Any], bool]) -> bool:
    return isinstance(values, dict) and all(isinstance(k, str) and accepts(v) for k, v in values.items())


def _is_list_of(values: Any, accepts: Callable[[Any], bool]) -> bool:
    return isinstance(values, list) and all(accepts(v) for v in values)


# The shape of every entry field the site and the board read (``board``, ``tier``, ``kind``, ``submitter`` are
# checked on their own): a board file edited by hand with a wrong-typed field is refused naming the file and the
# field, never a crash of ``build`` or ``submit``.
ENTRY_FIELD_SHAPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "id": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "method": (lambda v: isinstance(v, dict) and isinstance(v.get("name", ""), str)
               and isinstance(v.get("family", ""), str), "an object with string name and family"),
    "base_model": (lambda v: isinstance(v, dict), "an object"),
    "tasks": (lambda v: _is_list_of(v, lambda t: isinstance(t, str)), "a list of task ids"),
    "final_row": (lambda v: _is_str_map(v, lambda x: x is None or _is_number(x)), "an object of numbers or null"),
    "summary": (lambda v: _is_str_map(v, lambda x: x is None or _is_number(x)), "an object of numbers or null"),
    "summary_status": (lambda v: _is_str_map(v, lambda x: isinstance(x, str)), "an object of strings"),
    "trainable_params": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "an integer or null"),
    "extra_data": (lambda v: isinstance(v, dict), "an object"),
    "links": (lambda v: _is_str_map(v, lambda x: isinstance(x, str)), "an object of strings"),
    "contact": (lambda v: isinstance(v, str), "a string"),
    "flags": (lambda v: _is_list_of(v, lambda f: isinstance(f, dict)), "a list of objects"),
    "checkpoints": (lambda v: _is_list_of(v, lambda h: isinstance(h, str)), "a list of strings"),
    "source": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "caveats": (lambda v: _is_list_of(v, lambda c: isinstance(c, str)), "a list of strings"),
    "results": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "submitted_utc": (lambda v: isinstance(v, str), "a string"),
    "bundle_sha256": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "history": (lambda v: _is_list_of(v, lambda h: isinstance(h, dict)), "a list of earlier versions (objects)"),
    "seed": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "an integer or null"),
}


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Entry:
    id: str
    tier: str
    kind: str
    board: BoardKey
    method: dict[str, Any]
    base_model: dict[str, Any]
    tasks: list[str]
    final_row: dict[str, float | None]
    summary: dict[str, float | None]
    summary_status: dict[str, str]
    trainable_params: int | None = None
    extra_data: dict[str, Any] = field(default_factory=lambda: {"used": False})
    links: dict[str, str] = field(default_factory=dict)
    contact: str = ""
    flags: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    source: dict[str, Any] | None = None
    caveats: list[str] = field(default_factory=list)
    results: dict[str, Any] | None = None
    submitted_utc: str = ""
    bundle_sha256: str | None = None
    submitter: Submitter | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    seed: int | None = None                 # meta.yaml ``seed``: entries of one method over seeds share a row

    @property
    def name(self) -> str:
        return str(self.method.get("name", ""))

    @property
    def family(self) -> str:
        return str(self.method.get("family", "other"))

    @property
    def owner(self) -> Submitter | None:
        """Who may replace this entry: its submitter; for an entry written before submitters were recorded (only
        a contact), its normalised contact; None (the board's maintainer) for seeded rows without either."""
        if self.submitter is not None:
            return self.submitter
        return Submitter.from_contact(self.contact) if normalise_identity(self.contact or "") else None

    @property
    def grade(self) -> str:
        return str((self.source or {}).get("grade") or "primary")

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": ENTRY_SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Entry:
        if not isinstance(data, dict):
            raise DataError("an entry must be a JSON object", file=where)
        version = data.get("schema_version")
        if not known_version(version, KNOWN_ENTRY_VERSIONS):
            raise SchemaVersionError(where, version, KNOWN_ENTRY_VERSIONS, "leaderboard entry")
        fields = {k: v for k, v in data.items() if k != "schema_version"}
        for key in ("id", "tier", "kind", "board", "method", "base_model", "tasks", "final_row", "summary"):
            if key not in fields:
                raise DataError("required key missing", file=where, field=key)
        if fields["tier"] not in TIERS:
            raise DataError(f"must be one of {', '.join(TIERS)}", file=where, field="tier")
        if fields["kind"] not in KINDS:
            raise DataError(f"must be one of {', '.join(KINDS)}", file=where, field="kind")
        fields["board"] = BoardKey.from_dict(fields["board"], where)
        if fields.get("submitter") is not None:
            fields["submitter"] = Submitter.from_dict(fields["submitter"], where)
        fields.setdefault("summary_status", {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        if unknown:
            raise DataError(f"unknown keys: {', '.join(unknown)}", file=where)
        for key, (accepts, shape) in ENTRY_FIELD_SHAPES.items():
            if key in fields and not accepts(fields[key]):
                raise DataError(f"must be {shape}, got {type(fields[key]).__name__}", file=where, field=key)
        return cls(**fields)


def entry_id(method_name: str, checkpoints: list[str]) -> str:
    """Same method name + same checkpoint hashes → same id (so a resubmission replaces, never duplicates)."""
    digest = hashlib.sha256("\n".join([method_name, *sorted(checkpoints)]).encode("utf-8")).hexdigest()[:12]
    return f"{slugify(method_name)[:40]}-{digest}"


def submissions_dir(board: str | os.PathLike) -> Path:
    return Path(board) / SUBMISSIONS


def entry_path(board: str | os.PathLike, eid: str) -> Path:
    return submissions_dir(board) / f"{eid}.json"


def read_entries(board: str | os.PathLike) -> list[Entry]:
    """Every entry of a board, in id order (an empty or missing folder is an empty board)."""
    folder = submissions_dir(board)
    if not folder.is_dir():
        return []
    return [Entry.from_dict(read_json(p, "leaderboard entry"), str(p)) for p in sorted(folder.glob("*.json"))]


def bundles_dir(board: str | os.PathLike) -> Path:
    return submissions_dir(board) / "bundles"


def bundle_store_path(board: str | os.PathLike, sha256: str) -> Path:
    """Where the board keeps the bundle of that hash (content-addressed: one name per content)."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise DataError(f"not a sha256 hex digest: {sha256!r}", field="bundle_sha256")
    return bundles_dir(board) / f"{sha256}.tar.gz"


@contextlib.contextmanager
def board_lock(board: str | os.PathLike, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """The board's write lock (one writer at a time, across processes); every board write runs under it."""
    folder = submissions_dir(board)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / ".lock"), timeout=timeout)
    try:
        with lock:
            yield
    except Timeout:
        raise CvitError(f"{folder / '.lock'}: the board is locked by another writer for more than {timeout:.0f} s") from None


def entry_bytes(entry: Entry, where: str) -> bytes:
    """The entry file's bytes; a number JSON cannot hold (NaN, infinity) refuses the entry before any write."""
    try:
        return dumps_json(entry.to_dict()).encode("utf-8")
    except ValueError as exc:
        raise DataError(f"the entry cannot be stored as JSON ({exc})", file=where) from None


def read_entry(path: Path) -> Entry:
    return Entry.from_dict(read_json(path, "leaderboard entry"), str(path))


def history_record(previous: Entry, replaced_utc: str, replaced_by: Submitter | None, forced: bool) -> dict[str, Any]:
    """One replaced version as kept in the new entry's ``history`` (its own history is already in the list), with
    who replaced it and whether the maintainer forced the replacement over its owner."""
    record = previous.to_dict()
    record.pop("history", None)
    if record.get("submitter") is None and previous.owner is not None:
        record["submitter"] = asdict(previous.owner)     # a version-1 entry: its owner was its contact
    record["replaced_utc"] = replaced_utc
    record["replaced_by"] = asdict(replaced_by) if replaced_by is not None else None
    record["forced"] = forced
    return record


def _ownership_refusal(where: str, previous: Entry, submitter: Submitter | None, verified: bool) -> str | None:
    """Why ``submitter`` may not replace ``previous`` (None when it may)."""
    owner = previous.owner.describe() if previous.owner else "the board's maintainer"
    head = f"{where}: entry {previous.id} ({previous.name}) belongs to {owner}"
    tail = ("; nothing was changed (a maintainer can replace it with --force; the current version is then kept in "
            "the entry's history)")
    if not verified:
        return (f"{head}, and this submission names no owner: the contact inside a bundle is not proof of identity, "
                f"so it never replaces an entry (pass --owner IDENTITY once you have checked who sent it){tail}")
    if previous.owner != submitter:
        return f"{head}, not to {submitter.describe() if submitter else 'the board maintainer'}{tail}"
    return None


def _store_bundle(src: Path, dst: Path, sha256: str, where: str) -> bool:
    """Copy the bundle to its content-addressed place, hashing as it streams (the file must still be the one
    that was verified); True when the file is new."""
    if dst.is_file():
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        digest = hashlib.sha256()
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            while block := fin.read(1 << 20):
                digest.update(block)
                fout.write(block)
            fout.flush()
            os.fsync(fout.fileno())
        if digest.hexdigest() != sha256:
            raise DataError("the bundle changed while it was being verified; nothing was stored", file=where)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


@dataclass(frozen=True)
class PublishOutcome:
    entry: Entry
    path: Path
    replaced: bool


def publish_entry(board: str | os.PathLike, bundle_path: str | os.PathLike | None, entry: Entry,
                  submitter: Submitter | None, *, force: bool = False, verified: bool = True) -> PublishOutcome:
    """Store ``entry`` (and, when given, the verified bundle it came from) on ``board`` as one transaction.

    ``submitter`` becomes the entry's owner; an existing entry of the same id owned by another submitter is
    refused (:class:`OwnershipError`) unless ``force`` (the maintainer's override). ``verified=False`` says the
    submitter is only what the bundle claims (its contact): such a submission may add an entry but never replace
    one without ``force``. See the module docstring for the order of writes. ``bundle_path`` must have the hash
    ``entry.bundle_sha256``."""
    board = Path(board)
    where = str(bundle_path) if bundle_path is not None else f"entry {entry.id}"
    with board_lock(board):
        path = entry_path(board, entry.id)
        previous = read_entry(path) if path.exists() else None
        refusal = _ownership_refusal(where, previous, submitter, verified) if previous is not None else None
        if refusal is not None and not force:
            raise OwnershipError(refusal)
        when = now_utc()
        history = ([*previous.history, history_record(previous, when, submitter, forced=refusal is not None)]
                   if previous is not None else [])
        entry = replace(entry, submitter=submitter, history=history)
        payload = entry_bytes(entry, where)
        created: Path | None = None
        if bundle_path is not None:
            if entry.bundle_sha256 is None:
                raise DataError("an entry stored with its bundle needs bundle_sha256", file=where)
            store = bundle_store_path(board, entry.bundle_sha256)
            created = store if _store_bundle(Path(bundle_path), store, entry.bundle_sha256, where) else None
        try:
            atomic_write_bytes(path, payload)           # the commit point
        except BaseException:
            if created is not None:
                created.unlink(missing_ok=True)
            raise
    return PublishOutcome(entry=entry, path=path, replaced=previous is not None)


def write_entry(board: str | os.PathLike, entry: Entry) -> tuple[Path, bool]:
    """Write (or replace) an entry without bundle or ownership check (seeding and maintainer tools), under the
    board lock; returns its path and whether an earlier entry was replaced."""
    path = entry_path(board, entry.id)
    payload = entry_bytes(entry, str(path))
    with board_lock(board):
        replaced = path.exists()
        atomic_write_bytes(path, payload)
    return path, replaced


def _difference(a: Any, b: Any) -> float | None:
    if a is None or b is None:
        return None
    diff = float(b) - float(a)
    return round(diff, 6) if math.isfinite(diff) else None


def flag_differences(submitted: dict[str, Any], recomputed: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Numbers of ``submitted`` that differ from ``recomputed`` by more than :data:`FLAG_TOLERANCE` (or where one
    side is null and the other is not; a claimed number with nothing recomputed is flagged too). Keys only in
    ``recomputed`` are not flagged (nothing was claimed)."""
    flags = []
    for key in sorted(submitted):
        a, b = submitted[key], recomputed.get(key)
        if not (a is None or isinstance(a, (int, float))) or isinstance(a, bool):
            continue
        if a is None and b is None:
            continue
        if a is None or b is None or not (abs(float(a) - float(b)) <= FLAG_TOLERANCE):   # NaN is flagged too
            flags.append({"field": f"{prefix}{key}", "submitted": a, "recomputed": b,
                          "difference": _difference(a, b)})
    return flags
