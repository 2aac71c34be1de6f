"""CoIN: prepare from the published Zacks-Chen/CoIN layout, the alphabet order, export, and the compat/standard
scorers on reference-format prediction files, with expected numbers reasoned from docs/scoring.md."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coin_fixtures import GROUNDING, make_coin_files
from cvit_bench.benchmark import load_benchmark
from cvit_bench.errors import DataError
from cvit_bench.data.prepare import prepare
from cvit_bench.formats.sample import read_samples
from cvit_bench.scoring.pipeline import score_directory

COIN_ORDER = ["scienceqa", "textvqa", "imagenet", "gqa", "vizwiz", "grounding", "vqav2", "ocrvqa"]


@pytest.fixture(scope="module")
def coin_raw(tmp_path_factory):
    return make_coin_files(tmp_path_factory.mktemp("coin") / "raw", "original", n=4)


@pytest.fixture(scope="module")
def coin_prepared(coin_raw, tmp_path_factory):
    return prepare("coin", templates="original", source="coin-files", raw_root=coin_raw,
                   image_root=coin_raw / "images", out=tmp_path_factory.mktemp("coin-prep")).folder


def test_benchmark_order_schedule_and_aliases():
    spec = load_benchmark("coin")
    assert list(spec.upstream) == COIN_ORDER and spec.schedule == "lower" and spec.prompt_format == "vicuna_v1"
    assert spec.template_sets == ("original", "diverse", "10type")
    assert all(spec.task(t).max_new_tokens == 1024 for t in COIN_ORDER)
    assert spec.summary_label("AP") == "ACC" and spec.summary_label("MAP") == "MAA" and spec.summary_label("MFT") == "MFT"
    assert spec.task("imagenet").metric("compat") == "substring@coin"
    assert spec.task("grounding").metrics == {"compat": "iou50@coin", "standard": "iou50@robust"}
    assert spec.task("ocrvqa").metric("compat") == "exact@ocrvqa"
    alpha = load_benchmark("coin-alphabet")
    assert list(alpha.upstream) == ["gqa", "imagenet", "ocrvqa", "grounding", "scienceqa", "textvqa", "vizwiz", "vqav2"]
    assert alpha.tasks == spec.tasks and alpha.id == "coin-alphabet"


def test_prepare_reads_templates_from_the_files(coin_prepared):
    manifest = json.loads((coin_prepared / "manifest.json").read_text())
    assert manifest["template_set"] == "original" and manifest["test_subset"] == "full"
    # one instruction per family, read from the files (last line of each text), recorded in the manifest
    assert manifest["templates"]["5"] == ["Please provide the bounding box coordinate of the region this sentence describes."]
    assert manifest["templates"]["2"] == ["Answer the question using a single word or phrase."]
    imagenet = read_samples(coin_prepared / "imagenet" / "test.parquet")
    assert imagenet[0].question == "What is the object in the image?" and imagenet[0].template_index == 0
    assert [s.source_id for s in imagenet] == ["0", "1", "2", "3"] and imagenet[0].meta["question_id_type"] == "int"
    # mixed int/str ids in one file survive as source_id strings with their type recorded
    vqa = read_samples(coin_prepared / "vqav2" / "test.parquet")
    assert [s.meta["question_id_type"] for s in vqa] == ["str", "int", "str", "int"]
    ground = read_samples(coin_prepared / "grounding" / "test.parquet")
    assert [s.meta["size"] for s in ground] == [list(size) for size, _ in GROUNDING]
    assert ground[1].meta["answer_bbox"] == "[0.25, 0.00, 0.75, 1.00]"
    sqa = read_samples(coin_prepared / "scienceqa" / "test.parquet")
    assert [s.references for s in sqa] == [["A"], ["B"], ["A"], ["B"]]          # joined from problems.json
    assert sqa[0].meta["coin_text"].startswith("<image>\n") and sqa[0].meta["coin_answer"] == "A"
    tv = read_samples(coin_prepared / "textvqa" / "test.parquet")
    assert len(tv[0].references) == 10 and tv[0].meta["coin_answer"] == "stop"


def test_10type_indices_follow_first_appearance_and_test_subset(tmp_path):
    raw = make_coin_files(tmp_path / "raw", "10type", n=6)
    res = prepare("coin", templates="10type", source="coin-files", raw_root=raw, image_root=raw / "images",
                  out=tmp_path / "p", tasks=["gqa", "grounding"], test_subset=4, seed=3)
    m = res.manifest
    assert m["test_subset"]["n"] == 4 and "sha256" in m["test_subset"]["rule"]
    assert len(m["templates"]["3"]) == 3 and len(m["templates"]["5"]) == 2
    rows = {(s.task, s.split): s.rows for s in res.summary}
    assert rows[("gqa", "test")] == 4 and rows[("gqa", "train")] == 6
    again = prepare("coin", templates="10type", source="coin-files", raw_root=raw, image_root=raw / "images",
                    out=tmp_path / "q", tasks=["gqa", "grounding"], test_subset=4, seed=3)
    assert again.manifest["files"] == m["files"]                                  # deterministic


def test_bad_grounding_record_names_file_record_and_field(coin_raw, tmp_path):
    path = coin_raw / "Instructions_Original" / "Grounding" / "test.json"
    records = json.loads(path.read_text())
    broken = tmp_path / "Grounding"
    broken.mkdir()
    records[1]["size"] = [0, 10]
    (broken / "test.json").write_text(json.dumps(records))
    (broken / "train.json").write_text((path.parent / "train.json").read_text())
    with pytest.raises(DataError) as err:
        prepare("coin", templates="original", source="coin-files", raw_root=coin_raw, image_root=coin_raw / "images",
                out=tmp_path / "out", tasks=["grounding"], paths={"grounding": str(broken)})
    msg = str(err.value)
    assert "test.json" in msg and "ref-1" in msg and "size" in msg
    assert not (tmp_path / "out" / "coin").exists()                               # nothing half-written


def test_export_round_trips_and_writes_multitask(coin_prepared, coin_raw, tmp_path):
    from cvit_bench.data.export import export

    set_dir = export(coin_prepared.parent, tmp_path / "export", benchmark="coin")
    assert set_dir.name == "Instructions_Original"
    ground = json.loads((set_dir / "Grounding" / "test.json").read_text())
    original = json.loads((coin_raw / "Instructions_Original" / "Grounding" / "test.json").read_text())
    assert ground == original
    vqa = json.loads((set_dir / "VQAv2" / "val.json").read_text())
    assert [type(r["question_id"]) for r in vqa] == [str, int, str, int]
    joint = json.loads((set_dir / "Multitask" / "train.json").read_text())
    assert len(joint) == 8 * 4 and joint[0]["id"] == "104"                        # every task's train file, in order
    again = prepare("coin", templates="original", source="coin-files", raw_root=tmp_path / "export",
                    image_root=coin_raw / "images", out=tmp_path / "again",
                    paths={"scienceqa_problems": str(coin_raw / "ScienceQA" / "problems.json"),
                           "scienceqa_splits": str(coin_raw / "ScienceQA" / "pid_splits.json"),
                           "textvqa_annotations": str(coin_raw / "TextVQA" / "TextVQA_0.5.1_val.json"),
                           "gqa_questions": str(coin_raw / "GQA" / "testdev_balanced_questions.json")})
    assert {k: v["rows"] for k, v in again.manifest["files"].items()} == \
        {k: v["rows"] for k, v in json.loads((coin_prepared / "manifest.json").read_text())["files"].items()}


# --- scoring: every CoIN rule on one final-row prediction set (reference format) ------------------------

PREDICTIONS = {
    # gold A, B, A, B; "a cat" parses as option A (quirk); pid 103 missing -> FAILED: 3/4
    "scienceqa": [("100", "A"), ("101", "The answer is B."), ("102", "a cat")],
    # m4c soft accuracy: "stop" 4/10 -> 1.0, "stop sign" 3/10 -> 0.9, "nothing" 0, "word3" 0.9: 70.0
    "textvqa": [(5000, "stop"), (5001, "stop sign"), (5002, "nothing"), (5003, "word3")],
    # positional, case-sensitive substring either way: Goldfish x, cat (in "tabby cat") ok, "" ok, gold in pred ok
    "imagenet": [(0, "Goldfish"), (1, "cat"), (2, ""), (3, "a goldfish swimming")],
    # rstrip('.') + lower: "No." ok, "Cat" ok, 20190002 is unbalanced (not counted), "dog" x: 2/3
    "gqa": [("20190000", "No."), ("20190001", "Cat"), ("20190002", "anything"), ("20190003", "dog")],
    # upper() equality against unanswerable, yes, unanswerable, yes: Unanswerable ok, YES ok, no x, No x: 50
    "vizwiz": [("VizWiz_val_00000000", "Unanswerable"), ("VizWiz_val_00000001", "YES"),
               ("VizWiz_val_00000002", "no"), ("VizWiz_val_00000003", "No")],
    # CoIN slicing drops the first and last character after removing brackets: the first three keep IoU > 0.5,
    # "[0.2, 0.3, 0.6, 0.7]" loses its last digit ("0.") -> y2 = 0 -> IoU 0: 3/4 (robust: 4/4)
    "grounding": [("ref-0", "[0.10, 0.35, 0.50, 0.55]"), ("ref-1", "0.25, 0.00, 0.75, 1.00"),
                  ("ref-2", " [0.67, 0.67, 1.00, 1.00]"), ("ref-3", "[0.2, 0.3, 0.6, 0.7]")],
    # ids given with the other JSON type (str() join); "2" ok, "yes" ok (upper), "two" x, "Yes." x: 50
    "vqav2": [(262148000, "2"), ("262148001", "yes"), (262148002, "two"), ("262148003", "Yes.")],
    # "Unanswerable" anywhere (case-sensitive) is wrong; else lower() equality: 2/4
    "ocrvqa": [("761183272_0", "book title 0"), ("761183272_1", "Unanswerable"),
               ("761183272_2", "Book Title 2 Unanswerable"), ("761183272_3", "Book Title 3")],
}
EXPECTED_COMPAT = {"scienceqa": 75.0, "textvqa": 70.0, "imagenet": 75.0, "gqa": 200 / 3, "vizwiz": 50.0,
                   "grounding": 75.0, "vqav2": 50.0, "ocrvqa": 50.0}


def write_reference_predictions(root, stage="8", tasks=None):
    for task, lines in PREDICTIONS.items():
        if tasks and task not in tasks:
            continue
        path = root / stage / f"{task}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"question_id": q, "prompt": "", "text": t, "answer_id": "x",
                                            "model_id": "m", "metadata": {}}) + "\n" for q, t in lines))
    return root


def test_compat_scores_equal_the_coin_rules(coin_prepared, tmp_path):
    preds = write_reference_predictions(tmp_path / "preds")
    results = score_directory(preds, coin_prepared.parent, benchmark="coin", profile="compat", out=tmp_path / "out")
    final = dict(zip(results["matrix"]["tasks"], results["matrix"]["values"][-1]))
    assert final == pytest.approx(EXPECTED_COMPAT)
    assert results["summary"]["AP"] == pytest.approx(sum(EXPECTED_COMPAT.values()) / 8)
    cells = results["cells"]
    assert cells["8/grounding"]["extras"]["n_unparsed"] == 0 and cells["8/scienceqa"]["n"] == 4
    assert results["matrix"]["metrics"][5] == "iou50@coin"


def test_standard_scores(coin_prepared, tmp_path):
    preds = write_reference_predictions(tmp_path / "preds", tasks={"grounding", "imagenet", "ocrvqa"})
    results = score_directory(preds, coin_prepared.parent, benchmark="coin", profile="standard", out=tmp_path / "out")
    final = dict(zip(results["matrix"]["tasks"], results["matrix"]["values"][-1]))
    # robust boxes: all four; exact_any@m4c: only "Goldfish"; exact@m4c: "book title 0", "Book Title 3"
    assert (final["grounding"], final["imagenet"], final["ocrvqa"]) == (100.0, 25.0, 50.0)


def test_positional_imagenet_refuses_a_reordered_file(coin_prepared, tmp_path):
    preds = write_reference_predictions(tmp_path / "preds", tasks={"imagenet"})
    path = preds / "8" / "imagenet.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    results = score_directory(preds, coin_prepared.parent, benchmark="coin", profile="compat", out=tmp_path / "out")
    cell = results["cells"]["8/imagenet"]
    assert cell["value"] is None and "order" in json.dumps(cell)   # refused, never misaligned


def test_cli_prepare_coin_files_and_bad_input_exit_2(coin_raw, tmp_path):
    cmd = [sys.executable, "-m", "cvit_bench", "prepare", "--benchmark", "coin", "--templates", "diverse",
           "--source", "coin-files", "--raw-root", str(coin_raw), "--out", str(tmp_path / "p")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "Instructions_Diverse" in proc.stderr      # this fixture has only Original


def test_repeated_question_id_last_record_wins_and_is_noted(coin_raw, tmp_path):
    path = coin_raw / "Instructions_Original" / "Grounding" / "test.json"
    records = json.loads(path.read_text())
    repeat = {**records[0], "answer_bbox": "[0.00, 0.00, 0.20, 0.20]"}
    folder = tmp_path / "Grounding"
    folder.mkdir()
    (folder / "test.json").write_text(json.dumps([*records, repeat]))
    (folder / "train.json").write_text((path.parent / "train.json").read_text())
    res = prepare("coin", templates="original", source="coin-files", raw_root=coin_raw, image_root=coin_raw / "images",
                  out=tmp_path / "out", tasks=["grounding"], paths={"grounding": str(folder)})
    note = res.manifest["notes"]["grounding"]["repeated_question_ids"]
    assert note["n_ids"] == 1 and note["n_records_dropped"] == 1 and note["examples"] == [str(records[0]["question_id"])]
    samples = read_samples(res.folder / "grounding" / "test.parquet")
    assert [s.source_id for s in samples] == [str(r["question_id"]) for r in records]      # first position
    assert samples[0].meta["answer_bbox"] == "[0.00, 0.00, 0.20, 0.20]"                      # last record
    # eval_grounding.py scores against the last record's box
    preds = tmp_path / "preds" / "8"
    preds.mkdir(parents=True)
    (preds / "grounding.jsonl").write_text(json.dumps({"question_id": records[0]["question_id"],
                                                       "text": "[0.00, 0.00, 0.20, 0.20]"}) + "\n")
    results = score_directory(preds.parent, res.folder.parent, benchmark="coin", profile="compat", out=tmp_path / "o")
    assert results["cells"]["8/grounding"]["value"] == 100.0


def _official_with_extras(coin_raw, tmp_path):
    """Official TextVQA/GQA annotation files holding one more question than CoIN's eval files."""
    tv = json.loads((coin_raw / "TextVQA" / "TextVQA_0.5.1_val.json").read_text())
    tv["data"].append({"question_id": 7777, "question": "q", "image_id": "x", "answers": ["yield"] * 10})
    gqa = json.loads((coin_raw / "GQA" / "testdev_balanced_questions.json").read_text())
    gqa["20199999"] = {"imageId": "n", "question": "q", "answer": "dog", "isBalanced": True,
                       "types": {"structural": "query", "semantic": "obj"}}
    (tmp_path / "tv.json").write_text(json.dumps(tv))
    (tmp_path / "gqa.json").write_text(json.dumps(gqa))
    return {"textvqa_annotations": str(tmp_path / "tv.json"), "gqa_questions": str(tmp_path / "gqa.json")}


def _score_lines(tmp_path, folder, lines_by_task, profile="compat"):
    preds = tmp_path / f"preds-{profile}-{len(list(tmp_path.iterdir()))}"
    for task, lines in lines_by_task.items():
        (preds / "8").mkdir(parents=True, exist_ok=True)
        (preds / "8" / f"{task}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return score_directory(preds, folder.parent, benchmark="coin", profile=profile, out=preds.with_suffix(".out"))


@pytest.mark.parametrize("test_subset", [None, 2])
def test_textvqa_gqa_ids_official_but_not_in_coins_file_are_scored(coin_raw, tmp_path, test_subset):
    res = prepare("coin", templates="original", source="coin-files", raw_root=coin_raw, image_root=coin_raw / "images",
                  out=tmp_path / "out", tasks=["textvqa", "gqa"], paths=_official_with_extras(coin_raw, tmp_path),
                  test_subset=test_subset)
    notes = res.manifest["notes"]
    left_out = 0 if test_subset is None else 2      # the 4 eval questions minus the subset
    assert len(notes["textvqa"]["official_extra"]) == 1 + left_out and len(notes["gqa"]["official_extra"]) == 1 + left_out
    tv_ids = [5000 + i for i in range(4)] + [7777]
    gqa = json.loads((tmp_path / "gqa.json").read_text())
    lines = {"textvqa": [{"question_id": q, "text": "yield" if q == 7777 else "stop"} for q in tv_ids],
             "gqa": [{"question_id": q, "text": gqa[q]["answer"]} for q in [f"2019{i:04d}" for i in range(4)] + ["20199999"]]}
    cells = _score_lines(tmp_path, res.folder, lines)["cells"]
    # every line scored as eval_textvqa.py does: the official 7777 with its own answers (1.0), "stop" 4/10 -> 1.0
    assert cells["8/textvqa"]["value"] == 100.0 and cells["8/textvqa"]["n"] == 5
    assert cells["8/gqa"]["value"] == 100.0 and cells["8/gqa"]["n"] == 4               # question 2 is unbalanced
    assert cells["8/textvqa"]["join"]["n_unknown"] == 0 and cells["8/textvqa"]["join"]["n_missing"] == 0
    # an id in neither file still crashes the reference
    bad = _score_lines(tmp_path, res.folder, {"textvqa": lines["textvqa"] + [{"question_id": 1, "text": "x"}]})
    assert bad["cells"]["8/textvqa"]["value"] is None and "KeyError" in bad["cells"]["8/textvqa"]["refused"]


def test_no_official_extra_note_when_the_eval_file_holds_every_official_id(coin_prepared):
    from cvit_bench.formats.manifest import read_manifest

    notes = read_manifest(coin_prepared).get("notes", {})
    assert all("official_extra" not in n for n in notes.values())
