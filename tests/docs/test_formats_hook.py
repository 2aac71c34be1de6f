"""The docs site's formats hook (docs/hooks/formats.py) renders every shipped schema or fails the build."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _hook():
    spec = importlib.util.spec_from_file_location("docs_formats_hook", ROOT / "docs" / "hooks" / "formats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_shipped_schema_is_rendered_with_every_top_level_property():
    hook = _hook()
    files = hook.schema_files(ROOT)
    names = {p.name for p, _, _ in files}
    assert {"manifest.schema.json", "run.schema.json", "results.schema.json", "submission.schema.json"} <= names
    page = hook.render_schemas(ROOT)
    for path, _, _ in files:
        schema = json.loads(path.read_text(encoding="utf-8"))
        assert f"`{path.name}`" in page
        for branch in [schema, *schema.get("oneOf", [])]:
            for prop in branch.get("properties", {}):
                assert f"| `{prop}` |" in page, (path.name, prop)


def test_catalogue_links_every_format_to_its_schema_section():
    table = _hook().render_catalogue(ROOT)
    from cvit_bench.formats.catalogue import formats

    hook = _hook()
    for fmt in formats():
        if fmt.schema is None:
            continue
        _, anchor = hook.schema_anchor(fmt.schema)
        assert f"(#schema-{anchor})" in table, fmt.name


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"properties": {"x": 5}}', '{"title": "nothing"}',
                                  '{"type": "object", "properties": {"x": {"$ref": "other.json#/a"}}}'])
def test_a_schema_that_cannot_be_rendered_raises_naming_the_file(tmp_path, text):
    hook = _hook()
    bad = tmp_path / "bad.schema.json"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(hook.SchemaRenderError, match="bad.schema.json"):
        hook.render_schema(bad, "somewhere")


def test_a_schema_missing_from_the_catalogue_fails(tmp_path):
    hook = _hook()
    folder = tmp_path / "cvit_bench" / "formats" / "schemas"
    folder.mkdir(parents=True)
    for p in (ROOT / "cvit_bench" / "formats" / "schemas").glob("*.schema.json"):
        (folder / p.name).write_bytes(p.read_bytes())
    board = tmp_path / "leaderboard" / "schema"
    board.mkdir(parents=True)
    for p in (ROOT / "leaderboard" / "schema").glob("*.json"):
        (board / p.name).write_bytes(p.read_bytes())
    (folder / "extra.schema.json").write_text('{"type": "object"}', encoding="utf-8")
    with pytest.raises(hook.SchemaRenderError, match="extra.schema.json"):
        hook.render_catalogue(tmp_path)


def test_the_page_must_hold_each_marker_once():
    hook = _hook()
    with pytest.raises(hook.SchemaRenderError, match="formats:catalogue"):
        hook._replace_marker("no marker here", hook.CATALOGUE_MARKER, "x")
