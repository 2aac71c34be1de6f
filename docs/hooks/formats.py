"""mkdocs hook: render docs/formats.md's generated sections from the shipped JSON Schemas and the format catalogue.

The page holds two markers, each on a line of its own:

* ``<!-- formats:catalogue -->`` — the table of :func:`cvit_bench.formats.catalogue.formats` (name, where the
  file lives, the ``schema_version`` written today, the module that owns its reader and writer);
* ``<!-- formats:schemas -->`` — one section per schema file of ``cvit_bench/formats/schemas/`` and
  ``leaderboard/schema/``: its title and description, then a table of every property (dotted path, type,
  required, description), including nested objects, array items, ``oneOf`` branches and ``$defs``.

The reference must never be silently incomplete, so the hook raises (and ``mkdocs build`` fails) when a marker
is missing, a schema file cannot be read or rendered, or the catalogue names a format whose schema file is
absent or a schema file of the package is not in the catalogue.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

try:  # mkdocs turns a PluginError into a clean build failure; the renderer itself needs no mkdocs (tests)
    from mkdocs.exceptions import PluginError
except ImportError:  # pragma: no cover - only without the docs extra
    PluginError = Exception  # type: ignore[misc,assignment]

PAGE = "formats.md"
CATALOGUE_MARKER = "<!-- formats:catalogue -->"
SCHEMAS_MARKER = "<!-- formats:schemas -->"

#: Schema folders, relative to the repository root (the folder of mkdocs.yml): the path users see once
#: installed, and the prefix of the page anchors of its schemas (both folders hold a results.schema.json).
SCHEMA_DIRS = (
    ("cvit_bench/formats/schemas", "cvit_bench/formats/schemas", ""),
    ("leaderboard/schema", "cvit_bench/leaderboard/schema", "leaderboard-"),
)

#: The ``$id`` prefix of the core schemas (``cvit_bench/formats/schemas``), which other schemas may ``$ref``.
CORE_SCHEMA_ID_PREFIX = "https://cvit-bench.invalid/schemas/"

#: How deep nested objects are unfolded into dotted rows before a row just says "object".
MAX_DEPTH = 6


class SchemaRenderError(PluginError):
    """A schema that cannot be turned into the reference (names the file and the JSON pointer)."""


def _cell(text: Any) -> str:
    """Table-cell text: HTML-escaped (descriptions hold ``<stage>``), pipes escaped, one line."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else f"<code>{html.escape(text)}</code>"


def _type_of(node: dict[str, Any], where: str) -> str:
    """A short type description of one schema node."""
    if not isinstance(node, dict):
        if node is True:
            return "any"
        raise SchemaRenderError(f"{where}: a schema node must be an object, got {node!r}")
    if "$ref" in node:
        ref = node["$ref"]
        if isinstance(ref, str) and ref.startswith(CORE_SCHEMA_ID_PREFIX) and ref.endswith(".schema.json"):
            # another shipped core schema, referenced by its $id (the board's limits compose on results)
            file = ref.removeprefix(CORE_SCHEMA_ID_PREFIX)
            return f"[`{file}`](#schema-{file.removesuffix('.schema.json')})"
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            raise SchemaRenderError(f"{where}: only local references '#/$defs/<name>' are supported, got {ref!r}")
        return f"[{ref.split('/')[-1]}](#def-{where.split(':', 1)[0]}-{ref.split('/')[-1]})"
    if "const" in node:
        return "const " + _code(json.dumps(node["const"]))
    if "enum" in node:
        return "one of " + ", ".join(_code(json.dumps(v)) for v in node["enum"])
    for key in ("oneOf", "anyOf"):
        if key in node:
            return " or ".join(_type_of(branch, f"{where}/{key}/{k}") for k, branch in enumerate(node[key]))
    kind = node.get("type")
    if kind is None:
        return "any"
    kinds = kind if isinstance(kind, list) else [kind]
    parts = []
    for k in kinds:
        if k == "array" and isinstance(node.get("items"), dict):
            parts.append("array of " + _type_of(node["items"], f"{where}/items"))
        else:
            parts.append(str(k))
    return " or ".join(parts)


def _bounds(node: dict[str, Any]) -> str:
    notes = []
    for key, label in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"),
                       ("minLength", "length ≥"), ("maxLength", "length ≤"), ("minItems", "items ≥"),
                       ("maxItems", "items ≤")):
        if key in node:
            notes.append(f"{label} {node[key]}")
    if "pattern" in node:
        notes.append("pattern " + _code(str(node["pattern"])))
    if node.get("additionalProperties") is False:
        notes.append("no other keys")
    return "; ".join(notes)


def _join(base: str, name: str) -> str:
    return f"{base}.{name}" if base else name


def _rows(node: dict[str, Any], base: str, where: str, depth: int) -> list[str]:
    """Table rows for the children of ``node`` (named ``base`` in dotted paths): its properties, the values of
    an open-ended object (``<key>``) and the properties of array items (``[]``), recursively."""
    out: list[str] = []
    props = node.get("properties", {})
    if not isinstance(props, dict):
        raise SchemaRenderError(f"{where}/properties: must be an object")
    required = set(node.get("required", []))
    children = [(name, sub, f"{where}/properties/{name}", name in required) for name, sub in props.items()]
    additional = node.get("additionalProperties")
    if isinstance(additional, dict):
        children.append(("<key>", additional, f"{where}/additionalProperties", False))
    for name, sub, here, is_required in children:
        if sub is True:
            sub = {}
        if not isinstance(sub, dict):
            raise SchemaRenderError(f"{here}: a property schema must be an object")
        path = _join(base, name)
        description = sub.get("description", "")
        bounds = _bounds(sub)
        text = _cell(description) + (("; " if description else "") + bounds if bounds else "")
        out.append(f"| {_code(path)} | {_type_of(sub, here)} | {'yes' if is_required else ''} | {text} |")
        if depth < MAX_DEPTH:
            out.extend(_rows(sub, path, here, depth + 1))
            items = sub.get("items")
            if isinstance(items, dict):
                out.extend(_rows(items, path + "[]", f"{here}/items", depth + 1))
    return out


TABLE_HEAD = ["| property | type | required | description |", "|---|---|---|---|"]


def _object_block(node: dict[str, Any], where: str) -> list[str]:
    lines: list[str] = []
    for k, part in enumerate(node.get("allOf", [])):
        if not isinstance(part, dict):
            raise SchemaRenderError(f"{where}/allOf/{k}: must be an object")
        if "$ref" in part:
            lines += [f"Includes every property of {_type_of(part, where + f'/allOf/{k}')}.", ""]
    if node.get("additionalProperties") is False:
        lines += ["No keys other than these are allowed.", ""]
    rows = _rows(node, "", where, 0)
    for k, part in enumerate(node.get("allOf", [])):
        if "$ref" not in part:
            rows += _rows(part, "", f"{where}/allOf/{k}", 0)
    if rows:
        lines += TABLE_HEAD + rows + [""]
    elif not any(k in node for k in ("oneOf", "anyOf", "allOf")):
        bounds = _bounds(node)
        lines += [f"Type: {_type_of(node, where)}" + (f" ({bounds})" if bounds else "") + ".", ""]
    if "if" in node or "then" in node:
        lines += ["Conditional rule: if " + _code(json.dumps(node.get("if", {}))) + " then "
                  + _code(json.dumps(node.get("then", {}))) + ".", ""]
    return lines


def render_schema(path: Path, shown_as: str, anchor_prefix: str = "") -> str:
    """The Markdown section of one schema file; raises :class:`SchemaRenderError` naming the file."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaRenderError(f"{path}: cannot read the schema: {exc}") from exc
    if not isinstance(schema, dict):
        raise SchemaRenderError(f"{path}: a schema must be a JSON object")
    anchor = anchor_prefix + path.name.removesuffix(".json").removesuffix(".schema")
    where = f"{anchor}:#"
    try:
        lines = [f"### `{path.name}` {{#schema-{anchor}}}", "",
                 f"Shipped as `{shown_as}/{path.name}`.", ""]
        if schema.get("title"):
            lines += [f"**{_cell(schema['title'])}**", ""]
        if schema.get("description"):
            lines += [_cell(schema["description"]), ""]
        if not any(k in schema for k in ("properties", "oneOf", "anyOf", "type")):
            raise SchemaRenderError(f"{path}: nothing to render (no properties, oneOf, anyOf or type)")
        lines += _object_block(schema, where)
        for key in ("oneOf", "anyOf"):
            for k, branch in enumerate(schema.get(key, [])):
                if not isinstance(branch, dict):
                    raise SchemaRenderError(f"{path}: {key}/{k} must be an object")
                title = branch.get("title") or branch.get("description") or f"variant {k + 1}"
                lines += [f"#### {'One of' if key == 'oneOf' else 'Any of'}: {_cell(title)}", ""]
                lines += _object_block(branch, f"{where}/{key}/{k}")
        for name, node in schema.get("$defs", {}).items():
            if not isinstance(node, dict):
                raise SchemaRenderError(f"{path}: $defs/{name} must be an object")
            lines += [f"#### Definition `{name}` {{#def-{anchor}-{name}}}", ""]
            if node.get("description"):
                lines += [_cell(node["description"]), ""]
            lines += _object_block(node, f"{where}/$defs/{name}")
    except SchemaRenderError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise SchemaRenderError(f"{path}: {exc}") from exc
    except Exception as exc:  # a schema shape this renderer does not understand: fail, never skip
        raise SchemaRenderError(f"{path}: cannot render the schema: {type(exc).__name__}: {exc}") from exc
    return "\n".join(lines)


def schema_files(root: Path) -> list[tuple[Path, str, str]]:
    found: list[tuple[Path, str, str]] = []
    for folder, shown_as, prefix in SCHEMA_DIRS:
        directory = root / folder
        files = sorted(directory.glob("*.json"))
        if not files:
            raise SchemaRenderError(f"{directory}: no schema files found")
        found.extend((f, shown_as, prefix) for f in files)
    return found


def schema_anchor(schema: str) -> tuple[Path, str]:
    """The repository path and page anchor of a catalogue entry's ``"<package>:<file>"`` schema."""
    package, _, name = schema.partition(":")
    for folder, shown_as, prefix in SCHEMA_DIRS:
        installed = shown_as.replace("/", ".")
        if package == installed or f"{package}.{Path(name).parent}".replace("/", ".") == installed:
            file = Path(name).name
            return Path(folder) / file, prefix + file.removesuffix(".json").removesuffix(".schema")
    raise SchemaRenderError(f"the format catalogue names the schema {schema!r}, which is in no schema folder")


def render_catalogue(root: Path) -> str:
    from cvit_bench.formats.catalogue import formats

    package_schemas = {p.name for p in (root / SCHEMA_DIRS[0][0]).glob("*.schema.json")}
    listed = set()
    lines = ["| format | file | schema_version | schema | reader/writer |", "|---|---|---|---|---|"]
    for fmt in formats():
        if fmt.schema is None:
            schema_cell = "checked in code by its reader"
        else:
            path, anchor = schema_anchor(fmt.schema)
            if not (root / path).is_file():
                raise SchemaRenderError(f"the format catalogue names {fmt.name!r} with the schema {path}, which is missing")
            listed.add(path.name if path.parent == Path(SCHEMA_DIRS[0][0]) else None)
            schema_cell = f"[`{path.name}`](#schema-{anchor})"
        version = "none" if fmt.version is None else fmt.version
        lines.append(f"| {fmt.name} | {_cell(fmt.files)} | {version} | {schema_cell} | `{fmt.owner}` |")
    unlisted = sorted(package_schemas - listed)
    if unlisted:
        raise SchemaRenderError(f"schema files not in the format catalogue (cvit_bench/formats/catalogue.py): "
                                f"{', '.join(unlisted)}")
    return "\n".join(lines)


def render_schemas(root: Path) -> str:
    return "\n\n".join(render_schema(path, shown_as, prefix) for path, shown_as, prefix in schema_files(root))


def _replace_marker(markdown: str, marker: str, text: str) -> str:
    if markdown.count(marker) != 1:
        raise SchemaRenderError(f"docs/{PAGE} must hold the marker {marker} exactly once")
    return markdown.replace(marker, text)


def on_page_markdown(markdown: str, *, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    root = Path(config.config_file_path).resolve().parent
    markdown = _replace_marker(markdown, CATALOGUE_MARKER, render_catalogue(root))
    return _replace_marker(markdown, SCHEMAS_MARKER, render_schemas(root))
