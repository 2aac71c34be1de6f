"""JSON Schemas of cvit-bench's on-disk formats (``<format>.schema.json``, shipped as package data) and the one
validation helper every reader uses.

Readers check ``schema_version`` first, so a file from a newer cvit-bench is refused with "unknown
schema_version" naming the file and the version, not with a list of unrelated schema complaints; then the
JSON Schema (Draft 2020-12), whose first problem is reported with the file and the field's JSON path.
Other codebases can write our formats against these files (docs/formats.md).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from os import PathLike
from typing import Any

from ...errors import DataError, SchemaVersionError, known_version


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """The parsed ``<name>.schema.json`` of this package."""
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


def _field(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def check_schema(instance: Any, schema: dict[str, Any], where: str | PathLike, what: str) -> None:
    """Raise :class:`DataError` naming ``where`` and the field of the first schema violation."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise DataError(f"does not match the {what} schema: {first.message}{more}", file=where, field=_field(first))


@lru_cache(maxsize=None)
def validator(name: str) -> Any:
    """A compiled validator of ``<name>.schema.json`` (line formats validate many objects with one)."""
    import jsonschema

    return jsonschema.Draft202012Validator(load_schema(name))


def check_line(obj: Any, name: str, where: str | PathLike, line_no: int, known_versions: tuple[int, ...],
               what: str) -> None:
    """One JSONL line: a ``schema_version``, when present, must be known; then ``<name>.schema.json``."""
    if isinstance(obj, dict) and "schema_version" in obj and not known_version(obj["schema_version"], known_versions):
        raise DataError(f"unknown {what} schema_version {obj['schema_version']!r}; this cvit-bench reads "
                        f"{', '.join(map(str, known_versions))} (upgrade cvit-bench or re-create the file)",
                        file=where, record=f"line {line_no}", field="schema_version")
    v = validator(name)
    if v.is_valid(obj):
        return
    first = sorted(v.iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.message))[0]
    raise DataError(f"does not match the {what} schema: {first.message}", file=where, record=f"line {line_no}",
                    field=_field(first))


def validate_document(doc: Any, name: str, where: str | PathLike, known_versions: tuple[int, ...],
                      what: str) -> dict[str, Any]:
    """Version first, then ``<name>.schema.json``; returns ``doc`` unchanged."""
    if not isinstance(doc, dict):
        raise DataError(f"a {what} must be a JSON object", file=where)
    version = doc.get("schema_version")
    if not known_version(version, known_versions):
        raise SchemaVersionError(where, version, known_versions, what)
    check_schema(doc, load_schema(name), where, what)
    return doc
