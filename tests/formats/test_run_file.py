"""run.json: one type, one reader/writer, validated against the published schema."""
from __future__ import annotations

import json

import pytest

from cvit_bench.errors import DataError, SchemaVersionError
from cvit_bench.formats.run_file import RunRecord, StageEntry, read_run, write_run
from cvit_bench.formats.schemas import load_schema

SHA = "ab" * 32


def _record() -> RunRecord:
    return RunRecord(benchmark="cvit", template_set="single", base_model="/models/base",
                     method={"name": "seq-lora", "config": {"lora_r": 4}}, tasks=["scienceqa", "textvqa"],
                     stages=[StageEntry(index=1, task="scienceqa", path="stage-01-scienceqa", sha256=SHA,
                                        weights="adapter_model.safetensors", train={"steps": 3})],
                     fewshot=[StageEntry(name="fewshot-5", task="places365", path="fewshot-5-places365", sha256=SHA,
                                         from_stage={"path": "stage-01-scienceqa", "sha256": SHA})])


def test_round_trip_writes_the_documented_keys(tmp_path):
    write_run(tmp_path, _record())
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["schema_version"] == 1 and doc["benchmark"] == "cvit"
    assert doc["stages"][0] == {"index": 1, "task": "scienceqa", "path": "stage-01-scienceqa", "sha256": SHA,
                                "weights": "adapter_model.safetensors", "train": {"steps": 3}}
    assert doc["fewshot"][0]["from"] == {"path": "stage-01-scienceqa", "sha256": SHA}
    assert read_run(tmp_path) == _record()


def test_a_minimal_file_written_elsewhere_is_read(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(
        {"schema_version": 1, "stages": [{"index": 1, "task": "gqa", "path": "a"}]}))
    run = read_run(tmp_path)
    assert run.kind == "sequential" and run.eval_adapter == "latest" and run.stages[0].sha256 is None


def test_unknown_version_names_file_and_version(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"schema_version": 7, "stages": []}))
    with pytest.raises(SchemaVersionError, match=r"run\.json.*schema_version 7"):
        read_run(tmp_path)


@pytest.mark.parametrize("stage,field", [
    ({"index": 1, "task": "gqa"}, "stages.0"),
    ({"index": 0, "task": "gqa", "path": "a"}, "stages.0.index"),
    ({"index": 1, "task": "gqa", "path": "a", "sha256": "xyz"}, "stages.0.sha256"),
])
def test_bad_stage_entries_name_the_field(tmp_path, stage, field):
    (tmp_path / "run.json").write_text(json.dumps({"schema_version": 1, "stages": [stage]}))
    with pytest.raises(DataError) as exc:
        read_run(tmp_path)
    assert str(tmp_path / "run.json") in str(exc.value) and exc.value.field == field


def test_schema_is_shipped_with_the_package():
    assert load_schema("run")["properties"]["schema_version"] == {"const": 1}
