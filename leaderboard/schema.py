"""The submission schema (``schema/submission.schema.json``, the authority) and its validation.

``submission.json`` inside a bundle = ``{"schema_version": 1, "tier", "meta", "files": [...]}``. The schema
version is checked first, so a bundle from a newer cvit-bench is refused with "unknown schema_version", not
with a list of unrelated schema complaints. Links must be ``https://`` (the schema's pattern); the site
builder re-checks that rule before it renders a link (defence in depth: a board file edited by hand).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema

from cvit_bench.errors import DataError, SchemaVersionError

SUBMISSION_SCHEMA_VERSION = 1
KNOWN_SUBMISSION_VERSIONS = (1,)
SUBMISSION_NAME = "submission.json"
RESULTS_NAME = "results.json"


@lru_cache(maxsize=None)
def submission_schema() -> dict[str, Any]:
    text = resources.files("cvit_bench.leaderboard").joinpath("schema/submission.schema.json").read_text("utf-8")
    return json.loads(text)


def meta_schema() -> dict[str, Any]:
    """The schema of ``meta.yaml`` alone (the ``meta`` part of a submission), with the shared definitions."""
    full = submission_schema()
    return {**full["$defs"]["meta"], "$defs": full["$defs"]}


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _check(instance: Any, schema: dict[str, Any], where: str, prefix: str = "") -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        field = prefix + _path(first)
        raise DataError(f"does not match the submission schema: {first.message}{more}", file=where, field=field)


def validate_meta(meta: Any, where: str = "meta.yaml") -> dict[str, Any]:
    """Validate leaderboard metadata (``meta.yaml``); returns it unchanged or raises :class:`DataError`."""
    if not isinstance(meta, dict):
        raise DataError("metadata must be a mapping (method, base_model, trainable_params, extra_data, links, contact)",
                        file=where)
    _check(meta, meta_schema(), where)
    return meta


def validate_submission(doc: Any, where: str = SUBMISSION_NAME) -> dict[str, Any]:
    """Validate ``submission.json``: schema version first (clear message), then the JSON Schema."""
    if not isinstance(doc, dict):
        raise DataError("must be a JSON object", file=where)
    version = doc.get("schema_version")
    if version not in KNOWN_SUBMISSION_VERSIONS:
        raise SchemaVersionError(where, version, KNOWN_SUBMISSION_VERSIONS, "submission")
    _check(doc, submission_schema(), where)
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
