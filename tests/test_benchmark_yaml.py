"""Benchmark YAML is validated, not trusted: typos and unknown names fail naming file, key path and choices."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cvit_bench.benchmark import load_benchmark
from cvit_bench.cli import main
from cvit_bench.errors import DataError


def _cvit() -> dict:
    return yaml.safe_load(Path(load_benchmark("cvit").source_file).read_text())


def _write(tmp_path: Path, data: dict, name: str = "bench.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _error(path: Path) -> str:
    load_benchmark.cache_clear()
    with pytest.raises(DataError) as exc:
        load_benchmark(str(path))
    return str(exc.value)


def test_packaged_benchmarks_are_valid():
    for bench in ("cvit", "cvit-mini"):
        assert load_benchmark(bench).tasks


def test_task_key_typo_names_file_key_path_and_valid_keys(tmp_path):
    data = _cvit()
    data["tasks"]["textvqa"]["if_chek"] = data["tasks"]["textvqa"].pop("if_check")
    msg = _error(_write(tmp_path, data))
    assert str(tmp_path / "bench.yaml") in msg and "'tasks.textvqa.if_chek'" in msg
    assert "unknown key" in msg and "if_check" in msg and "max_new_tokens" in msg


@pytest.mark.parametrize("edit,path,valid", [
    (lambda d: d.update(schedual="lower"), "'schedual'", "schedule"),
    (lambda d: d["tasks"]["gqa"]["metrics"].update(standard="exact@nope"), "'tasks.gqa.metrics.standard'",
     "exact@m4c"),
    (lambda d: d["tasks"]["gqa"]["metrics"].update(strict="exact@m4c"), "'tasks.gqa.metrics.strict'", "compat"),
    (lambda d: d["tasks"]["gqa"].update(kind="open_ended"), "'tasks.gqa.kind'", "short_answer"),
    (lambda d: d["tasks"]["gqa"].update(if_check="if@nope"), "'tasks.gqa.if_check'", "if@short"),
    (lambda d: d["tasks"]["gqa"].update(image_mode="resize"), "'tasks.gqa.image_mode'", "crop"),
    (lambda d: d.update(template_sets=["single", "ten"]), "'template_sets[1]'", "five"),
    (lambda d: d["downstream"][0].update(protocl="zero-shot-final"), "'downstream[0].protocl'", "protocol"),
    (lambda d: d["downstream"][0].update(protocol="zero-shot"), "'downstream[0].protocol'", "few-shot"),
])
def test_unknown_names_are_errors(tmp_path, edit, path, valid):
    data = _cvit()
    edit(data)
    msg = _error(_write(tmp_path, data))
    assert path in msg and valid in msg


def test_cli_reports_a_bad_benchmark_with_exit_code_2(tmp_path):
    data = _cvit()
    data["tasks"]["scienceqa"]["max_new_token"] = 3
    path = _write(tmp_path, data)
    load_benchmark.cache_clear()
    result = CliRunner().invoke(main, ["prepare", "--benchmark", str(path), "--source", "cvit-files",
                                       "--raw-root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "tasks.scienceqa.max_new_token" in result.output and "max_new_tokens" in result.output
