"""Bad input and hostile conditions outside the leaderboard (issue 14): every refusal of ``prepare``, ``score``,
``metrics``, ``report`` and ``evaluate`` is exit 2 with a message naming the user's file, and leaves the out
folder byte for byte as it was; ``prepare``'s replace survives ``kill -9`` at any point (real ``os._exit`` in a
subprocess); resume edge cases of the prediction files.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cvit_bench.files import JsonlAppender, iter_jsonl
from cvit_bench.formats.manifest import read_manifest
from cvit_bench.formats.prepared import PreparedData
from cvit_fixtures import make_cvit_files
from cli_helpers import assert_refused, cli, snapshot
from leaderboard_fixtures import write_predictions

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return make_cvit_files(tmp_path_factory.mktemp("ref-raw") / "raw")


def _prepare(raw: Path, out: Path, *extra: str):
    return cli("prepare", "--source", "cvit-files", "--raw-root", raw, "--out", out, "--tasks", "scienceqa", *extra)


@pytest.fixture(scope="module")
def prepared_all(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref-prep") / "prep"
    r = cli("prepare", "--source", "cvit-files", "--raw-root", raw, "--out", out)
    assert r.exit_code == 0, r.output
    return out


# ------------------------------------------------------------------------------------ prepare
def test_prepare_out_that_is_a_file_or_under_a_file(raw, tmp_path):
    (tmp_path / "f").write_text("x")
    assert_refused(_prepare(raw, tmp_path / "f"), f"{tmp_path / 'f'}: the prepare --out folder is a file")
    assert_refused(_prepare(raw, tmp_path / "f" / "sub"), f"{tmp_path / 'f' / 'sub'}: cannot create")
    assert (tmp_path / "f").read_text() == "x"


@pytest.mark.parametrize("shape, needle", [
    (["a", "list"], "must be an object keyed by problem id"),
    ({"x": 1}, "problem id not in"),
])
def test_prepare_names_the_raw_json_of_a_wrong_shape(raw, tmp_path, shape, needle):
    import shutil

    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    problems = bad / "ScienceQA/problems.json"
    data = json.loads(problems.read_text())
    if isinstance(shape, dict):       # every problem replaced by a non-object
        data = {pid: 1 for pid in data}
        needle, where = "each problem must be an object", str(problems)
    else:
        data, where = shape, str(problems)
    problems.write_text(json.dumps(data))
    out = tmp_path / "out"
    assert _prepare(raw, out).exit_code == 0
    before = snapshot(out)
    assert_refused(_prepare(bad, out), where, needle)
    assert snapshot(out) == before


GQA_SHAPES = {
    "list": (lambda d: [1, 2], None, "(top level)", "must be an object keyed by question id, got list"),
    "record-string": (lambda d: {k: "x" for k in d}, "first", None, "must be a JSON object, got str"),
    "types-list": (lambda d: {k: {**v, "types": ["x"]} for k, v in d.items()}, "first", "types", "must be an object"),
    "answer-missing": (lambda d: {k: {x: y for x, y in v.items() if x != "answer"} for k, v in d.items()}, "first",
                       "answer", "required field missing"),
}


@pytest.mark.parametrize("shape", list(GQA_SHAPES))
def test_prepare_names_the_official_gqa_json_of_a_wrong_shape(raw, tmp_path, shape):
    """The cvit-files GQA join reads ``testdev_balanced_questions.json``: a wrong shape is exit 2 naming that file,
    the question and the field (was an AttributeError)."""
    import shutil

    edit, record, field, needle = GQA_SHAPES[shape]
    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    questions = bad / "GQA/testdev_balanced_questions.json"
    data = json.loads(questions.read_text())
    questions.write_text(json.dumps(edit(data)))
    r = cli("prepare", "--source", "cvit-files", "--raw-root", bad, "--out", tmp_path / "out", "--tasks", "gqa")
    needles = [str(questions), needle] + ([f"record {next(iter(data))}"] if record else []) + ([f"field '{field}'"] if field else [])
    assert_refused(r, *needles)
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []     # nothing prepared


def test_prepare_names_the_raw_file_of_a_duplicate_id_not_its_parquet(raw, tmp_path):
    import shutil

    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    test_json = bad / "Instructions_Single/ScienceQA/test.json"
    records = json.loads(test_json.read_text())
    test_json.write_text(json.dumps(records + records[:1]))
    r = _prepare(bad, tmp_path / "out")
    assert_refused(r, str(test_json), f"record {records[0]['question_id']}", "the same id appears twice")
    assert ".parquet" not in r.output and "prepare-" not in r.output


def test_negative_limits_are_usage_errors(raw, tmp_path):
    assert_refused(_prepare(raw, tmp_path / "out", "--limit-per-split", "-1"), "--limit-per-split")
    assert not (tmp_path / "out").exists()


CRASH = textwrap.dedent('''
    import os, sys
    from cvit_bench import files
    from cvit_bench.data.prepare import prepare

    raw, out, point = sys.argv[1:4]
    real_exchange, real_replace = files._exchange, os.replace
    if point == "before-swap":
        files._exchange = lambda a, b: os._exit(9)
    elif point == "after-swap":
        def exchange_then_die(a, b):
            real_exchange(a, b)
            os._exit(9)
        files._exchange = exchange_then_die
    elif point == "between-renames":              # the fallback where the system has no atomic exchange
        files._exchange = lambda a, b: False
        def replace_then_die(a, b):
            real_replace(a, b)
            if ".cvit.old-" in str(b):
                os._exit(9)
        os.replace = replace_then_die
    prepare("cvit", templates="single", source="cvit-files", raw_root=raw, out=out, tasks=["scienceqa"],
            limit_per_split=3)
''')


@pytest.mark.parametrize("point, expect", [("before-swap", None), ("after-swap", 3), ("between-renames", None)])
def test_kill_at_any_point_of_the_replace_leaves_a_whole_benchmark(raw, tmp_path, point, expect):
    out = tmp_path / "out"
    assert _prepare(raw, out).exit_code == 0                      # the old benchmark: every sample
    proc = subprocess.run([sys.executable, "-c", CRASH, str(raw), str(out), point], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 9, proc.stderr
    stale = [p.name for p in out.iterdir() if p.name.startswith(".cvit.")]
    assert stale, "the killed run leaves its staging folder behind"
    if point != "between-renames":                  # atomic exchange: the out path always holds a whole benchmark
        manifest = read_manifest(out / "cvit")
        PreparedData.open(out / "cvit").verify()
        assert manifest["limit_per_split"] == expect
    # the next run removes what the killed one left (and puts back an old benchmark the fallback moved away)
    r = _prepare(raw, out, "--limit-per-split", "2")
    assert r.exit_code == 0, r.output
    assert [p.name for p in out.iterdir()] == ["cvit"]
    assert read_manifest(out / "cvit")["limit_per_split"] == 2


def test_fallback_crash_is_repaired_before_the_benchmark_is_needed(raw, tmp_path):
    from cvit_bench.files import clean_stale_staging

    out = tmp_path / "out"
    assert _prepare(raw, out).exit_code == 0
    before = snapshot(out / "cvit")
    proc = subprocess.run([sys.executable, "-c", CRASH, str(raw), str(out), "between-renames"], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 9 and not (out / "cvit").exists()
    clean_stale_staging(out / "cvit", "prepare")
    assert snapshot(out / "cvit") == before and [p.name for p in out.iterdir()] == ["cvit"]


# ------------------------------------------------------------------------------------ score, metrics, report
@pytest.fixture(scope="module")
def predictions(prepared_all, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ref-preds") / "predictions"
    write_predictions(prepared_all, root)
    return root


def test_score_refusals_name_the_file(prepared_all, predictions, tmp_path):
    (tmp_path / "file").write_text("x")
    r = cli("score", "--predictions", predictions, "--data", prepared_all, "--out", tmp_path / "file")
    assert_refused(r, str(tmp_path / "file"))
    import shutil

    bad = tmp_path / "preds"
    shutil.copytree(predictions, bad)
    target = bad / "1/scienceqa.jsonl"
    lines = target.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"prediction": "', b'"prediction": "\xff', 1)
    target.write_bytes(b"\n".join(lines))
    r = cli("score", "--predictions", bad, "--data", prepared_all, "--out", tmp_path / "out")
    assert_refused(r, str(target), "record line 2", "not UTF-8")
    assert snapshot(tmp_path / "out") == {}


@pytest.fixture(scope="module")
def results_json(prepared_all, predictions, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref-scored")
    assert cli("score", "--predictions", predictions, "--data", prepared_all, "--out", out).exit_code == 0
    return out / "results.json"


@pytest.mark.parametrize("label, edit, needle", [
    ("version-99", lambda d: d.update(schema_version=99), "unknown results schema_version 99"),
    ("version-true", lambda d: d.update(schema_version=True), "unknown results schema_version True"),
    ("matrix-string", lambda d: d.update(matrix="abc"), "must be an object"),
    ("overflow", lambda d: d["matrix"]["values"][0].__setitem__(0, 1e308), "0..10000"),
    ("negative", lambda d: d["matrix"]["values"][0].__setitem__(0, -3.0), "never negative"),
])
def test_metrics_and_report_refuse_bad_results(results_json, tmp_path, label, edit, needle):
    doc = json.loads(results_json.read_text())
    edit(doc)
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps(doc))
    assert_refused(cli("metrics", "--matrix", bad, "--json", tmp_path / "m.json"), str(bad), needle)
    assert_refused(cli("report", bad, "--out", tmp_path / "report"), str(bad))
    assert snapshot(tmp_path / "report") == {} and not (tmp_path / "m.json").exists()


def test_nan_in_results_never_reaches_a_report(results_json, tmp_path):
    text = results_json.read_text().replace('"AP": ', '"AP": NaN, "was": ', 1)
    bad = tmp_path / "results.json"
    bad.write_text(text)
    assert_refused(cli("report", bad, "--out", tmp_path / "report"), str(bad), "NaN is not a finite number")
    assert snapshot(tmp_path / "report") == {}


def test_outputs_that_cannot_be_written_are_exit_2(results_json, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_refused(cli("metrics", "--matrix", results_json, "--json", tmp_path / "file" / "m.json"), str(tmp_path / "file"))
    assert_refused(cli("report", results_json, "--out", tmp_path / "file"), str(tmp_path / "file"))
    assert (tmp_path / "file").read_text() == "x"


# ------------------------------------------------------------------------------------ prediction-file resume
def test_complete_last_line_without_newline_is_kept_on_resume(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"uid": "a", "prediction": "x"}\n{"uid": "b", "prediction": "y"}')   # finished, no newline
    with JsonlAppender(path) as sink:
        sink.write_many([{"uid": "c", "prediction": "z"}])
    assert [o["uid"] for _, o in iter_jsonl(path)] == ["a", "b", "c"]
    path.write_bytes(b'{"uid": "a", "prediction": "x"}\n{"uid": "b", "predic')          # cut mid-line
    with JsonlAppender(path) as sink:
        sink.write_many([{"uid": "b", "prediction": "y"}])
    assert [o["uid"] for _, o in iter_jsonl(path)] == ["a", "b"]


def test_train_accepts_a_benchmark_yaml_path_like_evaluate(prepared_all):
    from cvit_bench.baselines.trainer import open_training_data
    from cvit_bench.benchmark import load_benchmark

    yaml_path = load_benchmark("cvit").source_file
    assert open_training_data(prepared_all, str(yaml_path)).folder == prepared_all / "cvit"


def test_a_write_failure_is_exit_2_naming_the_file_and_leaves_nothing_partial(results_json, tmp_path, monkeypatch):
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "m.json"
    r = cli("metrics", "--matrix", results_json, "--json", out)
    assert_refused(r, f"{out}: No space left on device")
    assert list(tmp_path.iterdir()) == []

    from cvit_bench.files import JsonlAppender

    with pytest.raises(OSError) as exc, JsonlAppender(tmp_path / "p.jsonl") as sink:
        sink.write_many([{"uid": "a"}])
    assert exc.value.filename == str(tmp_path / "p.jsonl")


def test_evaluate_out_that_is_a_file_is_refused_before_any_work(prepared_all, tmp_path):
    adapter = tmp_path / "stage-01-scienceqa"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"not loaded: the out check comes first")
    (tmp_path / "file").write_text("x")
    r = cli("evaluate", "--checkpoint", adapter, "--base-model", tmp_path / "no-model", "--data", prepared_all,
            "--out", tmp_path / "file", "--tasks", "scienceqa", "--allow-partial")
    assert_refused(r, f"{tmp_path / 'file'}: the evaluate --out folder is a file")
    assert (tmp_path / "file").read_text() == "x"
