"""The submission schema (``schema/submission.schema.json``, the authority) and its validation.

``submission.json`` inside a bundle = ``{"schema_version": 1, "tier", "meta", "files": [...]}``. The schema
version is checked first, so a bundle from a newer cvit-bench is refused with "unknown schema_version", not
with a list of unrelated schema complaints. Links must be ``https://`` (the schema's pattern); the site
builder re-checks that rule before it renders a link (defence in depth: a board file edited by hand).
"""
from __future__ import annotations

import json
import unicodedata
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema

from cvit_bench.errors import DataError, SchemaVersionError, known_version
from cvit_bench.formats.results import KNOWN_RESULTS_VERSIONS
from cvit_bench.formats.schemas import load_schema

SUBMISSION_SCHEMA_VERSION = 1
KNOWN_SUBMISSION_VERSIONS = (1,)
SUBMISSION_NAME = "submission.json"
RESULTS_NAME = "results.json"


@lru_cache(maxsize=None)
def _packaged_schema(name: str) -> dict[str, Any]:
    text = resources.files("cvit_bench.leaderboard").joinpath(f"schema/{name}").read_text("utf-8")
    return json.loads(text)


def submission_schema() -> dict[str, Any]:
    return _packaged_schema("submission.schema.json")


def results_schema() -> dict[str, Any]:
    """What a bundle's results.json must be: ``schema/board-results.schema.json``, the board's limits, which
    ``allOf``-references the core results schema by its ``$id`` (resolved through :func:`_results_registry`)."""
    return _packaged_schema("board-results.schema.json")


@lru_cache(maxsize=None)
def _results_registry() -> Any:
    """The core results schema under its ``$id``, so the board's schema can reference it without a network."""
    from referencing import Registry, Resource

    core = load_schema("results")
    return Registry().with_resource(core["$id"], Resource.from_contents(core))


def meta_schema() -> dict[str, Any]:
    """The schema of ``meta.yaml`` alone (the ``meta`` part of a submission), with the shared definitions."""
    full = submission_schema()
    return {**full["$defs"]["meta"], "$defs": full["$defs"]}


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _check(instance: Any, schema: dict[str, Any], where: str, prefix: str = "", what: str = "the submission schema",
           registry: Any = None) -> None:
    validator = (jsonschema.Draft202012Validator(schema) if registry is None
                 else jsonschema.Draft202012Validator(schema, registry=registry))
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        field = prefix + _path(first)
        message = first.message if len(first.message) <= 300 else first.message[:300] + "…"
        raise DataError(f"does not match {what}: {message}{more}", file=where, field=field)


def validate_meta(meta: Any, where: str = "meta.yaml") -> dict[str, Any]:
    """Validate leaderboard metadata (``meta.yaml``); returns it unchanged or raises :class:`DataError`."""
    if not isinstance(meta, dict):
        raise DataError("metadata must be a mapping (method, base_model, trainable_params, extra_data, links, contact)",
                        file=where)
    _check(meta, meta_schema(), where)
    name = check_display_name(meta["method"]["name"], where, "method.name")
    return {**meta, "method": {**meta["method"], "name": name}}


def validate_submission(doc: Any, where: str = SUBMISSION_NAME) -> dict[str, Any]:
    """Validate ``submission.json``: schema version first (clear message), then the JSON Schema."""
    if not isinstance(doc, dict):
        raise DataError("must be a JSON object", file=where)
    version = doc.get("schema_version")
    if not known_version(version, KNOWN_SUBMISSION_VERSIONS):
        raise SchemaVersionError(where, version, KNOWN_SUBMISSION_VERSIONS, "submission")
    _check(doc, submission_schema(), where)
    doc = {**doc, "meta": validate_meta(doc["meta"], where)}
    paths = [f["path"] for f in doc["files"]]
    dup = sorted({p for p in paths if paths.count(p) > 1})
    if dup:
        raise DataError(f"files listed twice: {', '.join(dup)}", file=where, field="files")
    if RESULTS_NAME not in paths:
        raise DataError("the bundle must list results.json", file=where, field="files")
    return doc


def is_https(url: Any) -> bool:
    """The only links a board renders: ``https://`` with no whitespace, quotes or angle brackets."""
    return (isinstance(url, str) and url.startswith("https://") and len(url) > len("https://")
            and not any(c.isspace() or c in "\"'<>\\" for c in url))


def validate_results(doc: Any, where: str) -> dict[str, Any]:
    """A bundle's results.json: version first, then the whole file against the core results schema and the
    board's limits on top of it (:func:`results_schema`), plus the shape rules a schema cannot state: the matrix
    (and IF-rate) values are stages x tasks, one metric id per column."""
    if not isinstance(doc, dict):
        raise DataError("must be a JSON object", file=where)
    if not known_version(doc.get("schema_version"), KNOWN_RESULTS_VERSIONS):
        raise SchemaVersionError(where, doc.get("schema_version"), KNOWN_RESULTS_VERSIONS, "results")
    _check(doc, results_schema(), where, what="the results.json schema", registry=_results_registry())
    for block in ("matrix", "if_rates"):
        m = doc.get(block)
        if m is None:
            continue
        rows, cols = len(m["stages"]), len(m["tasks"])
        if len(m["values"]) != rows or any(len(r) != cols for r in m["values"]):
            raise DataError(f"values must be {rows} rows x {cols} columns (stages x tasks)", file=where,
                            field=f"{block}.values")
    metrics = doc["matrix"].get("metrics")
    if metrics is not None and len(metrics) != len(doc["matrix"]["tasks"]):
        raise DataError(f"{len(metrics)} metric ids for {len(doc['matrix']['tasks'])} task columns (one per column)",
                        file=where, field="matrix.metrics")
    return doc


# Characters that make two different names look the same, or a name look different from what it is.
_BIDI_CONTROLS = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Scripts whose letters are confusable with each other (Latin a / Cyrillic а / Greek α ...): a name may use one.
_CONFUSABLE_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "COPTIC")


def _script(ch: str) -> str | None:
    name = unicodedata.name(ch, "")
    return next((s for s in _CONFUSABLE_SCRIPTS if name.startswith(s + " ")), None)


def check_display_name(name: str, where: str, field: str) -> str:
    """A method name as the board shows it: NFKC-normalised (full-width and ligature forms become plain ones);
    refused when it holds invisible/format characters, bidirectional controls, other control characters, or
    letters from more than one of the mutually confusable scripts (Latin, Cyrillic, Greek, ...), so that no row
    can pass for another (``Sеq-LoRA`` with a Cyrillic ``е``). Decision: whole-script lookalikes (a name all
    in Cyrillic) are allowed: they are a legitimate name in that script."""
    normal = unicodedata.normalize("NFKC", name).strip()
    if not normal:
        raise DataError("must not be empty or blank", file=where, field=field)
    for ch in normal:
        if ch in _BIDI_CONTROLS:
            raise DataError(f"bidirectional control character U+{ord(ch):04X} refused (it reorders what readers see)",
                            file=where, field=field)
        category = unicodedata.category(ch)
        if category in ("Cf", "Cc", "Co", "Cs", "Cn", "Zl", "Zp") or (category == "Zs" and ch != " "):
            raise DataError(f"invisible or control character U+{ord(ch):04X} refused", file=where, field=field)
    scripts = sorted({s for ch in normal if ch.isalpha() and (s := _script(ch))})
    if len(scripts) > 1:
        mixed = ", ".join(f"{ch!r} ({unicodedata.name(ch, '?')})" for ch in normal
                          if ch.isalpha() and _script(ch) not in (None, _majority_script(normal)))[:300]
        raise DataError(f"mixes letters of the {' and '.join(s.title() for s in scripts)} scripts, which look alike "
                        f"(a name that passes for another); found {mixed}", file=where, field=field)
    return normal


def _majority_script(text: str) -> str | None:
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha() and (s := _script(ch)):
            counts[s] = counts.get(s, 0) + 1
    return max(counts, key=counts.get) if counts else None
