"""`cvit-bench score`: joins, profiles, the accuracy matrix and results.json written from prediction files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cvit_bench.cli import main
from cvit_bench.continual.metrics import AccuracyMatrix, summarize
from cvit_bench.errors import CvitError, DataError
from cvit_bench.data.prepare import prepare
from cvit_bench.formats.results import read_results
from cvit_bench.formats.sample import read_samples
from cvit_bench.scoring.pipeline import score_directory
from cvit_fixtures import make_cvit_files

UPSTREAM = ["scienceqa", "textvqa", "flickr30k", "imagenet", "gqa", "vqav2"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("score")
    raw = make_cvit_files(root / "raw", "single")
    return prepare("cvit", templates="single", source="cvit-files", raw_root=raw, out=root / "prep").folder


def _write(path: Path, lines: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def _perfect(samples, wrong_every: int = 0) -> list[dict]:
    out = []
    for i, s in enumerate(samples):
        text = s.references[0] if s.references else s.target
        if wrong_every and i % wrong_every == 0:
            text = "zzz"
        out.append({"uid": s.uid, "prediction": text})
    return out


def test_lower_triangle_matrix_and_summary_recomputed(prepared, tmp_path):
    preds = tmp_path / "preds"
    for t in range(1, 7):
        for i, task in enumerate(UPSTREAM[:t], 1):
            samples = read_samples(prepared / f"{task}/test.parquet")
            # Earlier tasks degrade after later stages: wrong on every 2nd sample once t > i.
            _write(preds / str(t) / f"{task}.jsonl", _perfect(samples, wrong_every=2 if t > i else 0))
    for task in ("vizwiz", "textcaps", "ocrvqa"):
        _write(preds / "6" / f"{task}.jsonl", _perfect(read_samples(prepared / f"{task}/test.parquet")))
    results = score_directory(preds, prepared.parent, benchmark="cvit", profile="compat", out=tmp_path / "out")
    m = results["matrix"]
    assert m["stages"] == ["1", "2", "3", "4", "5", "6"] and m["tasks"] == UPSTREAM
    for t, row in enumerate(m["values"], 1):
        assert all(v is not None for v in row[:t]) and all(v is None for v in row[t:])
    assert m["values"][0][0] == 100.0 and m["values"][5][0] == 50.0       # scienceqa learned, then half forgotten
    assert m["metrics"][0] == "mc_letter@llava" and m["metrics"][2] == "cider_d_bestref@whitespace"
    expected = summarize(AccuracyMatrix(m["tasks"], m["stages"], m["values"]),
                         [results["cells"][f"6/{t}"]["if_rate"] for t in UPSTREAM])
    assert results["summary"] == expected and results["summary"]["BWT"] < 0
    assert results["summary"]["FWT"] is None                            # no zero-shot row, no super-diagonal
    assert results["downstream"]["vizwiz"]["value"] == 100.0 and results["downstream"]["vizwiz"]["stage"] == "6"
    assert results["downstream"]["places365@fewshot-5"]["value"] is None
    # Per-cell details: sample counts, clustered standard errors, paired test for forgotten tasks.
    cell = results["cells"]["1/scienceqa"]
    assert cell["n"] == 6 and cell["stderr"] == 0.0 and cell["paired_vs_final"]["delta"] == -50.0
    assert results["cells"]["6/scienceqa"]["stderr"] > 0
    on_disk = read_results(tmp_path / "out" / "results.json")
    assert on_disk["summary"] == results["summary"] and on_disk["schema_version"] == 1
    scores = (tmp_path / "out" / "scores" / "6" / "scienceqa.jsonl").read_text().splitlines()
    assert len(scores) == 6 and set(json.loads(scores[0])) == {"schema_version", "uid", "score", "if"}


def test_reference_format_files_join_on_question_id(prepared, tmp_path):
    samples = read_samples(prepared / "textvqa/test.parquet")
    lines = [{"question_id": int(s.source_id), "text": "stop", "prompt": "x", "answer_id": "a", "model_id": "m", "metadata": {}}
             for s in samples]
    _write(tmp_path / "p" / "textvqa" / "textvqa.jsonl", lines)      # stage folder named after the task
    results = score_directory(tmp_path / "p", prepared, benchmark="cvit", profile="compat", out=tmp_path / "o")
    assert results["matrix"]["stages"] == ["1", "2"]
    # 4 of 10 humans said "stop" -> soft accuracy 1.0 for every sample.
    assert results["matrix"]["values"][1][1] == pytest.approx(100.0)


def test_compat_positional_scorer_refuses_reordered_reference_files(prepared, tmp_path):
    samples = read_samples(prepared / "imagenet/test.parquet")
    lines = [{"question_id": int(s.source_id), "text": "goldfish"} for s in reversed(samples)]
    _write(tmp_path / "p" / "4" / "imagenet.jsonl", lines)
    results = score_directory(tmp_path / "p", prepared, benchmark="cvit", profile="compat", out=tmp_path / "o")
    cell = results["cells"]["4/imagenet"]
    assert cell["value"] is None and "not in eval-file order" in cell["refused"]
    assert cell["if_rate"] == 100.0            # the IF script works by id: one word each, all positive
    assert results["matrix"]["values"][3][3] is None
    _write(tmp_path / "p" / "4" / "imagenet.jsonl", lines[:3])
    results = score_directory(tmp_path / "p", prepared, benchmark="cvit", profile="compat", out=tmp_path / "o")
    assert "3 lines for 6 eval entries" in results["cells"]["4/imagenet"]["refused"]   # not a prefix of the eval file
    # standard joins by id and scores it; the CLI exits 2 on a refused compat cell, after writing results.json
    assert score_directory(tmp_path / "p", prepared, benchmark="cvit", profile="standard",
                           out=tmp_path / "s")["cells"]["4/imagenet"]["value"] is not None
    res = CliRunner().invoke(main, ["score", "--predictions", str(tmp_path / "p"), "--data", str(prepared.parent),
                                    "--profile", "compat", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "refused" in res.output and (tmp_path / "c" / "results.json").is_file()


def test_unknown_duplicate_and_missing_ids_are_reported(prepared, tmp_path):
    samples = read_samples(prepared / "vqav2/test.parquet")
    lines = _perfect(samples[:4]) + [_perfect(samples[:1])[0]]
    _write(tmp_path / "p" / "6" / "vqav2.jsonl", lines)
    results = score_directory(tmp_path / "p", prepared, benchmark="cvit", profile="compat", out=tmp_path / "o")
    join = results["cells"]["6/vqav2"]["join"]
    assert (join["n_unknown"], join["n_duplicates"], join["n_missing"]) == (0, 1, 2)
    assert any("duplicate ids" in w and "every line scored" in w for w in results["warnings"])
    # compat denominator = prediction lines (5 incl. the duplicate), all correct.
    assert results["cells"]["6/vqav2"]["n"] == 5
    with pytest.raises(DataError, match="duplicate ids"):
        score_directory(tmp_path / "p", prepared, benchmark="cvit", profile="standard", out=tmp_path / "o2")
    # an unknown id: eval_vqav2.py raises KeyError, so compat refuses the cell (standard ignores the line)
    _write(tmp_path / "p" / "6" / "vqav2.jsonl", _perfect(samples[:4]) + [{"uid": "vqav2/test/nope", "prediction": "x"}])
    results = score_directory(tmp_path / "p", prepared, benchmark="cvit", profile="compat", out=tmp_path / "o")
    cell = results["cells"]["6/vqav2"]
    assert cell["value"] is None and "line 5" in cell["refused"] and "KeyError" in cell["refused"]
    assert cell["join"]["unknown_examples"] == ["vqav2/test/nope"]


def test_standard_profile_counts_missing_as_empty_and_labels_fallbacks(prepared, tmp_path):
    samples = read_samples(prepared / "vqav2/test.parquet")
    _write(tmp_path / "p" / "6" / "vqav2.jsonl", _perfect(samples[:3]))
    results = score_directory(tmp_path / "p", prepared, benchmark="cvit", profile="standard", out=tmp_path / "o")
    cell = results["cells"]["6/vqav2"]
    # The published VQAv2 file has one answer per question: standard falls back to exact@m4c, and says so.
    assert cell["metric"] == "exact@m4c" and cell["n"] == 6 and cell["value"] == pytest.approx(50.0)
    assert cell["n_missing"] == 3
    assert any("exact@m4c instead of vqa_soft@m4c" in w for w in results["warnings"])
    assert "NaN" not in (tmp_path / "o" / "results.json").read_text()


def test_bad_layout_errors(prepared, tmp_path):
    _write(tmp_path / "p" / "stage9" / "vqav2.jsonl", [])
    with pytest.raises(CvitError, match="unknown stage folder 'stage9'"):
        score_directory(tmp_path / "p", prepared, benchmark="cvit", profile="compat", out=tmp_path / "o")
    bad = tmp_path / "q" / "1" / "scienceqa.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"uid": "scienceqa/test/100", "prediction": "A"}\n{"uid": 5}\n')
    with pytest.raises(DataError, match="line 2"):
        score_directory(tmp_path / "q", prepared, benchmark="cvit", profile="compat", out=tmp_path / "o")


def test_cli_score_prints_matrix(prepared, tmp_path):
    _write(tmp_path / "p" / "1" / "scienceqa.jsonl", _perfect(read_samples(prepared / "scienceqa/test.parquet")))
    res = CliRunner().invoke(main, ["score", "--predictions", str(tmp_path / "p"), "--data", str(prepared.parent),
                                    "--profile", "standard", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "100.00" in res.output and "mc_letter@strict" in res.output
    assert (tmp_path / "o" / "results.json").is_file()
