"""The board validates a bundle's results.json against the core results schema with its own limits on top."""
from __future__ import annotations

import copy

import jsonschema
import pytest

from cvit_bench.errors import DataError
from cvit_bench.formats.schemas import check_schema, load_schema
from cvit_bench.leaderboard.schema import results_schema, validate_results

GOOD = {
    "schema_version": 1,
    "benchmark": {"id": "cvit", "version": "1.0", "template_set": "single", "profile": "compat"},
    "stages": [{"label": "1", "kind": "upstream", "task": "scienceqa"}],
    "matrix": {"tasks": ["scienceqa"], "stages": ["1"], "values": [[50.0]], "metrics": ["mc_letter@llava"]},
    "summary": {"AP": 50.0},
}


def _refusal(change) -> DataError:
    doc = copy.deepcopy(GOOD)
    change(doc)
    with pytest.raises(DataError) as err:
        validate_results(doc, "b.tar.gz:results.json")
    return err.value


def test_the_board_schema_is_the_core_one_plus_limits():
    jsonschema.Draft202012Validator.check_schema(results_schema())
    assert results_schema()["allOf"] == [{"$ref": load_schema("results")["$id"]}]
    assert validate_results(copy.deepcopy(GOOD), "w") == GOOD


@pytest.mark.parametrize("change, field, needle", [
    # the core schema's rules (the board schema states no type of these)
    (lambda d: d["stages"][0].update(kind="bogus"), "stages.0.kind", "is not one of"),
    (lambda d: d["benchmark"].update(profile="fast"), "benchmark.profile", "is not one of"),
    (lambda d: d.update(summary="high"), "summary", "is not of type 'object'"),
    # the board's limits on top
    (lambda d: d["matrix"]["values"][0].__setitem__(0, 20000.0), "matrix.values.0.0", "is greater than the maximum"),
    (lambda d: d["benchmark"].pop("template_set"), "benchmark", "'template_set' is a required property"),
    (lambda d: d["matrix"].update(tasks=[]), "matrix.tasks", "should be non-empty"),
])
def test_refusals_name_the_file_and_field(change, field, needle):
    err = _refusal(change)
    assert err.file == "b.tar.gz:results.json" and err.field == field and needle in str(err), str(err)


def test_what_the_core_accepts_the_board_may_refuse():
    doc = {**copy.deepcopy(GOOD), "surprise": {}}
    check_schema(doc, load_schema("results"), "w", "results")       # the core allows added sections
    assert "Additional properties are not allowed" in str(_refusal(lambda d: d.update(surprise={})))
