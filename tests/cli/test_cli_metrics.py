"""`cvit-bench metrics --matrix FILE [--json OUT]` through click's runner (the command object itself)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cvit_bench.cli.metrics import metrics_command
from cvit_bench.continual.metrics import FORMULA_IDS
from cvit_bench.errors import CvitError, DataError
from cvit_bench.formats.results import SUMMARY_KEYS

WORKED_CSV = "stage,task1,task2,task3\n0,5,8,15\n1,80,10,20\n2,85,70,30\n3,50,65,90\n"


def test_prints_every_aggregate_and_writes_json(tmp_path):
    matrix = tmp_path / "m.csv"
    matrix.write_text(WORKED_CSV)
    out = tmp_path / "sub" / "agg.json"
    result = CliRunner().invoke(metrics_command, ["--matrix", str(matrix), "--json", str(out)])
    assert result.exit_code == 0, result.output
    for fid in FORMULA_IDS:
        assert fid in result.output
    for shown in ("68.3333", "75.2778", "-17.5000", "-11.6667", "8.5000", "5.6667", "20.0000", "-13.3333"):
        assert shown in result.output
    assert "(1/T) Σ_{i=1..T} a[T][i]" in result.output  # definitions are printed verbatim, not as markup
    data = json.loads(out.read_text())
    assert sorted(data["aggregates"]) == sorted(FORMULA_IDS)
    assert data["aggregates"]["map"] == pytest.approx(75.2778, abs=1e-4)
    assert tuple(data["summary"]) == tuple(sorted(SUMMARY_KEYS))  # canonical JSON sorts keys
    assert data["summary"]["MIF"] is None
    assert data["identity_residual"] == pytest.approx(0.0, abs=1e-9)
    assert data["matrix"]["stages"] == ["0", "1", "2", "3"]
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # atomic write left no temp file


def test_not_computable_aggregates_show_a_dash(tmp_path):
    matrix = tmp_path / "m.json"
    matrix.write_text(json.dumps({"tasks": ["a", "b"], "stages": ["1", "2"], "values": [[80, None], [70, 60]]}))
    out = tmp_path / "agg.json"
    result = CliRunner().invoke(metrics_command, ["--matrix", str(matrix), "--json", str(out)])
    assert result.exit_code == 0, result.output
    fwt_line = next(line for line in result.output.splitlines() if line.strip("│ ").startswith("fwt "))
    assert "—" in fwt_line
    data = json.loads(out.read_text())
    assert data["aggregates"]["fwt"] is None and data["aggregates"]["bwt"] == pytest.approx(-10.0)


def test_bad_matrix_raises_a_data_error_naming_file_row_and_column(tmp_path):
    matrix = tmp_path / "bad.csv"
    matrix.write_text("stage,a,b\n1,80,-\n")
    result = CliRunner().invoke(metrics_command, ["--matrix", str(matrix)])
    assert result.exit_code != 0
    assert isinstance(result.exception, DataError)
    assert "bad.csv" in str(result.exception) and "row 2" in str(result.exception) and "'b'" in str(result.exception)


def test_missing_file_is_a_cvit_error(tmp_path):
    result = CliRunner().invoke(metrics_command, ["--matrix", str(tmp_path / "nope.csv")])
    assert isinstance(result.exception, CvitError)
    assert "accuracy matrix" in str(result.exception)


def test_matrix_option_is_required():
    result = CliRunner().invoke(metrics_command, [])
    assert result.exit_code == 2 and "--matrix" in result.output
