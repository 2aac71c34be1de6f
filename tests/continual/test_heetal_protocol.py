"""He et al.'s CIT protocol (issue 18 a): cit.yaml, orders, initial tasks, the current-next schedule, AA and
bwt@he-code, the OK-VQA / A-OKVQA loaders, and the whole CLI path prepare → train → evaluate → report."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from heetal_fixtures import make_heetal_raw_root, write_aokvqa, write_okvqa
from raw_fixtures import write_json

from cvit_bench.benchmark import load_benchmark
from cvit_bench.schedule import upstream_cells
from cvit_bench.continual.metrics import AccuracyMatrix, get_formula
from cvit_bench.errors import CvitError, DataError, UnknownNameError
from cvit_bench.continual.he_protocol import he_aggregates, protocol_block
from cvit_bench.data.prepare import prepare
from cvit_bench.formats.sample import read_samples

CODE_ORDER = ["flickr30k", "textcaps", "vqav2", "ocrvqa", "gqa", "okvqa", "aokvqa", "vizwiz", "textvqa", "scienceqa"]


def test_cit_yaml_declares_the_code_bases_protocol():
    spec = load_benchmark("cit")
    assert set(spec.tasks) == set(CODE_ORDER)
    assert list(spec.upstream) == CODE_ORDER and spec.orders == {"code": tuple(CODE_ORDER)}
    assert spec.schedule == "current-next" and spec.order_parameter and spec.initial_tasks == ()
    assert spec.aggregates == ("aa@he-code", "bwt@he-code")
    assert {t.max_new_tokens for t in spec.tasks.values()} == {128}
    metrics = {t: spec.task(t).metric("compat") for t in spec.tasks}
    assert {t for t, m in metrics.items() if m == "vqa_soft@m4c"} == {"vqav2", "vizwiz", "textvqa", "okvqa"}
    assert metrics["gqa"] == "exact@gqa" and metrics["ocrvqa"] == metrics["aokvqa"] == "exact@m4c"
    assert metrics["scienceqa"] == "mc_letter@llava" and spec.task("aokvqa").metric("standard") == "mc_letter@strict"
    assert spec.all_tasks()[:10] == CODE_ORDER


def test_order_is_a_parameter_with_presets_and_clear_errors():
    spec = load_benchmark("cit")
    assert spec.resolve_order("code") == CODE_ORDER
    assert spec.resolve_order("gqa,okvqa") == ["gqa", "okvqa"]
    assert spec.with_order(["gqa", "okvqa"], initial=["vqav2"]).upstream == ("gqa", "okvqa")
    with pytest.raises(UnknownNameError, match="order1"):
        spec.resolve_order("order1")           # the paper's names are not confirmed, so not shipped
    with pytest.raises(UnknownNameError, match="imagenet"):
        spec.resolve_order("gqa,imagenet")
    with pytest.raises(CvitError, match="more than once"):
        spec.resolve_order("gqa,okvqa,gqa")
    with pytest.raises(CvitError, match="also in the order"):
        spec.with_order(["gqa", "okvqa"], initial=["gqa"])
    with pytest.raises(CvitError, match="fixed order"):
        load_benchmark("cvit").with_order(["gqa", "scienceqa"])


def test_current_next_schedule():
    assert upstream_cells(4, "current-next") == [(1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (3, 4),
                                                 (4, 1), (4, 2), (4, 3), (4, 4)]
    # a run that stopped after two of four stages: its rows keep "current + next"
    assert upstream_cells(4, "current-next", stages=2) == [(1, 1), (1, 2), (2, 2), (2, 3)]


def _code_aggregates(acc: np.ndarray) -> tuple[float, float]:
    """The code base's two lines, verbatim (unevaluated cells are zeros there)."""
    aa = acc[-1, :].mean()
    bwt = (acc[-1, :] - acc).min(0).mean()
    return float(aa), float(bwt)


def test_he_aggregates_equal_the_code_and_the_registered_formula():
    # rows 0..3, columns: one initial task + three tasks; None = not evaluated under current-next
    values = [[40.0, 10.0, 5.0, 8.0],
              [None, 60.0, 12.0, None],
              [None, None, 70.0, 20.0],
              [35.0, 45.0, 66.0, 75.0]]
    got = he_aggregates(values)
    aa, bwt = _code_aggregates(np.array([[0.0 if v is None else v for v in row] for row in values]))
    assert got["aa@he-code"] == pytest.approx(aa) and got["bwt@he-code"] == pytest.approx(bwt)
    assert got["bwt@he-code"] == pytest.approx(((35 - 40) + (45 - 60) + (66 - 70) + 0) / 4)
    # without initial tasks it is exactly continual.py's bwt@he-code and ap
    square = [row[1:] for row in values]
    m = AccuracyMatrix(tasks=["a", "b", "c"], stages=["0", "1", "2", "3"], values=square)
    sub = he_aggregates(square)
    assert sub["bwt@he-code"] == pytest.approx(get_formula("bwt@he-code")(m))
    assert sub["aa@he-code"] == pytest.approx(get_formula("ap")(m))
    assert he_aggregates([[1.0, None]])["aa@he-code"] is None          # final row incomplete
    block = protocol_block(["i"], ["a", "b"], {("0", "i"): 1.0, ("2", "i"): 0.5, ("2", "a"): 3.0, ("2", "b"): 4.0})
    assert block["tasks"] == ["i", "a", "b"] and block["stages"] == ["0", "1", "2"]
    assert block["values"][1] == [None, None, None] and block["aa@he-code"] == pytest.approx(2.5)


# ------------------------------------------------------------------------------------------------ loaders
@pytest.fixture(scope="module")
def cit_raw(tmp_path_factory):
    return make_heetal_raw_root(tmp_path_factory.mktemp("cit-raw"))


@pytest.fixture(scope="module")
def cit_prepared(cit_raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("cit-prepared")
    return prepare("cit", templates="single", source="raw", raw_root=cit_raw, out=out,
                   tasks=["scienceqa", "okvqa", "aokvqa", "vqav2"]).folder


def test_okvqa_loader_reads_the_official_vqa_format(cit_prepared):
    val = read_samples(cit_prepared / "okvqa/test.parquet")
    assert [s.source_id for s in val] == ["7001"]
    s = val[0]
    assert s.target == "italy" and s.references.count("italy") == 8 and len(s.references) == 10
    assert s.image == "okvqa/val2014/COCO_val2014_000000000071.jpg"
    assert s.prompt == "What country is this dish from?\nAnswer the question using a single word or phrase."
    train = read_samples(cit_prepared / "okvqa/train.parquet")
    assert [(t.source_id, t.target) for t in train] == [("5001", "racing"), ("5002", "umbrella")]


def test_aokvqa_loader_gives_letter_choices(cit_prepared):
    s = read_samples(cit_prepared / "aokvqa/test.parquet")[0]
    assert s.question == ("What is the purpose of the round thing?\nA. decoration\nB. clock\nC. light\nD. sign")
    assert s.target == "B" and s.references == ["B"] and s.choices == ["decoration", "clock", "light", "sign"]
    assert s.image == "coco/val2017/000000461751.jpg"          # COCO 2017 from the shared coco/ folder
    assert s.prompt.endswith("Answer with the option's letter from the given choices directly.")


def test_loader_errors_name_file_record_and_field(tmp_path):
    write_okvqa(tmp_path / "okvqa")
    anns = tmp_path / "okvqa/mscoco_val2014_annotations.json"
    data = json.loads(anns.read_text())
    data["annotations"] = []
    write_json(anns, data)
    with pytest.raises(DataError) as err:
        prepare("cit", templates="single", source="raw", raw_root=tmp_path, out=tmp_path / "o", tasks=["okvqa"])
    assert "OpenEnded_mscoco_val2014_questions.json" in str(err.value) and "7001" in str(err.value)
    write_aokvqa(tmp_path / "aokvqa", tmp_path / "coco")
    path = tmp_path / "aokvqa/aokvqa_v1p0_val.json"
    recs = json.loads(path.read_text())
    recs[0]["correct_choice_idx"] = 7
    write_json(path, recs)
    with pytest.raises(DataError) as err:
        prepare("cit", templates="single", source="raw", raw_root=tmp_path, out=tmp_path / "o2", tasks=["aokvqa"])
    msg = str(err.value)
    assert "aokvqa_v1p0_val.json" in msg and "3FB3Vf2yTQZZTbSoYCKWnf" in msg and "correct_choice_idx" in msg


def test_aokvqa_letters_are_scored_by_the_profiles(cit_prepared, tmp_path):
    from cvit_bench.formats.predictions import read_prediction_file
    from cvit_bench.scoring.pipeline import score_cell

    spec = load_benchmark("cit")
    samples = read_samples(cit_prepared / "aokvqa/test.parquet")
    for profile, text, expected in (("compat", "B", 100.0), ("compat", "clock", 0.0), ("standard", "B", 100.0)):
        path = tmp_path / f"{profile}-{text}.jsonl"
        path.write_text(json.dumps({"uid": samples[0].uid, "prediction": text}) + "\n")
        assert score_cell(spec, "1", "aokvqa", profile, samples, read_prediction_file(path)).value == expected


# ------------------------------------------------------------------------------------------------ CLI path
def _cli(args):
    from cvit_bench.cli import main

    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_cli_prepare_train_evaluate_report_with_initial_tasks(cit_raw, tiny_llava_dir, tmp_path, torch_one_thread):
    """The issue's "done when" on the cit benchmark from raw fixtures: an order, an initial task, ER and
    TIR+MAS on a tiny LLaVA, the current-next schedule by default, the He block and the similarity heatmap."""
    from cvit_bench.cli import main

    data = tmp_path / "prepared"
    _cli(["prepare", "--benchmark", "cit", "--source", "raw", "--raw-root", str(cit_raw), "--out", str(data),
          "--tasks", "scienceqa,okvqa,aokvqa,vqav2"])
    common = ["--base-model", str(tiny_llava_dir), "--data", str(data), "--order", "okvqa,aokvqa,vqav2",
              "--initial-tasks", "scienceqa", "--max-steps-per-task", "2", "--batch-size", "2", "--grad-accum", "1",
              "--lora-r", "2", "--device", "cpu"]
    for method, opts in (("er", []), ("tir-mas", ["--option", "importance_samples=2", "--option",
                                                   "similarity_samples=4"])):
        _cli(["train", "--method", method, "--out", str(tmp_path / method), *common, *opts])
        run = json.loads((tmp_path / method / "run.json").read_text())
        assert run["tasks"] == ["okvqa", "aokvqa", "vqav2"] and run["initial_tasks"] == ["scienceqa"]
        _cli(["evaluate", "--checkpoint", str(tmp_path / method), "--data", str(data), "--benchmark", "cit",
              "--out", str(tmp_path / f"eval-{method}"), "--num-workers", "0", "--device", "cpu"])
    er_train = json.loads((tmp_path / "er/run.json").read_text())["stages"][1]["train"]
    assert er_train["replayed_from"] == {"okvqa": 1, "scienceqa": 1}       # 1 % (at least one) of each
    res = json.loads((tmp_path / "eval-tir-mas/results.json").read_text())
    assert res["matrix"]["tasks"] == ["okvqa", "aokvqa", "vqav2"] and res["generation"]["schedule"] == "current-next"
    values = res["matrix"]["values"]
    assert res["matrix"]["stages"] == ["0", "1", "2", "3"]
    assert [v is not None for v in values[1]] == [True, True, False]         # current + next
    assert [v is not None for v in values[2]] == [False, True, True]
    block = res["protocol"]
    assert block["tasks"] == ["scienceqa", "okvqa", "aokvqa", "vqav2"]
    assert block["values"][0][0] is not None and block["values"][3][0] is not None   # initial task: rows 0 and T
    assert block["values"][1][0] is None and block["bwt@he-code"] <= 0
    sim = res["task_similarity"]
    assert sim["tasks"] == ["scienceqa", "okvqa", "aokvqa", "vqav2"]
    assert np.allclose(np.diag(sim["matrix"]), 1.0) and np.allclose(sim["matrix"], np.array(sim["matrix"]).T)
    out = _cli(["report", str(tmp_path / "eval-er/results.json"), str(tmp_path / "eval-tir-mas/results.json"),
                "--out", str(tmp_path / "report")])
    assert "report.html" in out.output
    html = (tmp_path / "report/report.html").read_text()
    assert "task similarity" in html and "aa@he-code" in html
    # bad input: an unknown order preset is exit 2 with the valid presets listed
    bad = CliRunner().invoke(main, ["train", "--method", "er", "--out", str(tmp_path / "bad"), "--base-model",
                                    str(tiny_llava_dir), "--data", str(data), "--order", "order1"])
    assert bad.exit_code == 2 and "code" in bad.output
