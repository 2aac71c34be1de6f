"""Every JSON/JSONL format: a published schema whose version matches what is written, readers that validate
and refuse unknown versions naming the file, and reference-format prediction lines still read."""
from __future__ import annotations

import importlib
import json
from importlib import resources

import jsonschema
import pytest

from cvit_bench.errors import DataError, SchemaVersionError
from cvit_bench.formats.catalogue import formats, with_schema
from cvit_bench.formats.predictions import read_prediction_file
from cvit_bench.formats.results import read_results, write_results
from cvit_bench.formats.schemas import load_schema
from fixtures_results import make_results


@pytest.mark.parametrize("fmt", with_schema(), ids=lambda f: f.name)
def test_each_schema_is_shipped_valid_and_pins_the_written_version(fmt):
    schema = fmt.load_schema()     # from the installed package's data, as other codebases would find it
    jsonschema.Draft202012Validator.check_schema(schema)
    if fmt.name == "prediction-line":
        versions = [b["properties"].get("schema_version") for b in schema["oneOf"]]
        assert {"const": fmt.version} in versions
    else:
        assert schema["properties"]["schema_version"] == {"const": fmt.version}
    importlib.import_module(fmt.owner)


def test_the_catalogue_lists_each_format_once_and_every_core_schema_file():
    names = [f.name for f in formats()]
    assert len(names) == len(set(names))
    assert {"routing", "task-similarity", "judge", "submission", "board-entry"} <= set(names)
    shipped = {p.name for p in resources.files("cvit_bench.formats.schemas").iterdir() if p.name.endswith(".schema.json")}
    listed = {f.schema.partition(":")[2] for f in with_schema() if f.schema.startswith("cvit_bench.formats.schemas:")}
    assert shipped == listed
    for f in with_schema():
        if f.schema.startswith("cvit_bench.formats.schemas:"):
            assert f.load_schema() == load_schema(f.name)


def test_prediction_lines_ours_old_and_reference_are_read(tmp_path):
    ours = tmp_path / "ours.jsonl"
    ours.write_text('{"schema_version": 1, "uid": "t/test/1", "prediction": "A", "fp": "x"}\n'
                    '{"uid": "t/test/2", "prediction": "B"}\n')
    pf = read_prediction_file(ours)
    assert pf.keys == ["t/test/1", "t/test/2"] and pf.texts == ["A", "B"] and pf.meta[0] == {"fp": "x"}
    ref = tmp_path / "merge.jsonl"
    ref.write_text('{"question_id": 17, "prompt": "USER: q ASSISTANT:", "text": "yes", "answer_id": "ab", '
                   '"model_id": "m", "metadata": {}}\n')
    pf = read_prediction_file(ref)
    assert pf.key_kind == "source_id" and pf.keys == ["17"] and pf.texts == ["yes"]


@pytest.mark.parametrize("line,field", [
    ('{"schema_version": 2, "uid": "a", "prediction": "x"}', "schema_version"),
    ('{"uid": 3, "prediction": "x"}', "(top level)"),
    ('{"uid": "a", "question_id": 1, "prediction": "x", "text": "y"}', "(top level)"),
    ('{"id": "a", "prediction": "x"}', "uid"),
])
def test_bad_prediction_lines_name_file_line_and_field(tmp_path, line, field):
    path = tmp_path / "p.jsonl"
    path.write_text('{"uid": "ok", "prediction": "fine"}\n' + line + "\n")
    with pytest.raises(DataError) as exc:
        read_prediction_file(path)
    assert exc.value.file == str(path) and exc.value.record == "line 2" and exc.value.field == field


def test_results_round_trip_and_unknown_version(tmp_path):
    results = make_results()
    write_results(tmp_path / "results.json", results)
    assert read_results(tmp_path / "results.json")["matrix"] == results["matrix"]
    (tmp_path / "new.json").write_text(json.dumps({**results, "schema_version": 3}))
    with pytest.raises(SchemaVersionError, match=r"new\.json.*schema_version 3"):
        read_results(tmp_path / "new.json")
    bad = {**results, "matrix": {**results["matrix"], "values": [["high"] * len(results["matrix"]["tasks"])]}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DataError) as exc:
        read_results(tmp_path / "bad.json")
    assert exc.value.field.startswith("matrix.values")


def test_results_record_gives_back_the_same_file_byte_for_byte(tmp_path):
    from cvit_bench.files import dumps_json
    from cvit_bench.formats.results import Results, load_results

    results = make_results()
    results["routing"] = {"1": {"scienceqa": [3, 1]}}          # a section the record does not type rides along
    write_results(tmp_path / "results.json", results)
    record = load_results(tmp_path / "results.json")
    assert dumps_json(record.to_dict()) == (tmp_path / "results.json").read_text("utf-8")
    assert record.to_dict() == read_results(tmp_path / "results.json")
    assert record.matrix.tasks == tuple(results["matrix"]["tasks"])
    assert record.matrix.row_by_task(record.final_stage) == dict(zip(results["matrix"]["tasks"],
                                                                     results["matrix"]["values"][-1]))
    assert record.summary == results["summary"] and record.other["routing"] == results["routing"]
    minimal = {"schema_version": 1, "benchmark": {"id": "b", "version": "1"},
               "matrix": {"tasks": ["t"], "stages": ["1"], "values": [[None]]}, "summary": {}}
    assert Results.from_dict(minimal).to_dict() == minimal and list(Results.from_dict(minimal).to_dict()) == list(minimal)
