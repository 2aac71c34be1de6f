"""Foundation: templates, benchmark definition, the cvit-files loaders, prepare, export and bad input."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cvit_bench.benchmark import load_benchmark
from cvit_bench.schedule import upstream_cells
from cvit_bench.cli import main
from cvit_bench.errors import CvitError, DataError, MissingFileError, SchemaVersionError
from cvit_bench.data.export import export
from cvit_bench.files import sha256_file
from cvit_bench.formats.manifest import read_manifest, resolve_prepared
from cvit_bench.formats.prepared import PreparedData
from cvit_bench.data.prepare import MissingImagesError, prepare
from cvit_bench.formats.sample import read_samples, samples_to_table
from cvit_bench.data.templates import choose_index, compose_prompt, load_template_set
from cvit_fixtures import make_cvit_files


def _prepare(raw: Path, out: Path, templates: str = "single", **kw):
    return prepare("cvit", templates=templates, source="cvit-files", raw_root=raw, out=out, **kw)


def _by_uid(folder: Path, rel: str) -> dict:
    return {s.uid: s for s in read_samples(folder / rel)}


@pytest.fixture(scope="module")
def raw_single(tmp_path_factory) -> Path:
    return make_cvit_files(tmp_path_factory.mktemp("raw-single"), "single")


@pytest.fixture(scope="module")
def prepared_single(raw_single, tmp_path_factory):
    return _prepare(raw_single, tmp_path_factory.mktemp("out-single"))


# --- templates and the benchmark definition -------------------------------------------------------------

def test_template_texts_are_verbatim_and_pinned_observations_hold():
    single, five = load_template_set("single"), load_template_set("five")
    assert single.families[0] == ("Answer with the option's letter from the given choices directly.",)
    assert single.families[2][0] == "What is happening in the presented picture?\nPlease describe it in one complete sentence."
    # The single-type VQA string is not one of the five VQA paraphrases; SCI/CAP/PLACE single = item 1 of five.
    assert single.families[1][0] not in five.families[1]
    for fam in (0, 2, 6):
        assert single.families[fam][0] == five.families[fam][0]
    # The single IMG string differs from every IMG paraphrase (item 5 differs in its second line).
    assert single.families[3][0] not in five.families[3]
    assert five.families[3][4].split("\n")[0] == single.families[3][0].split("\n")[0]
    # TextVQA, GQA and VQAv2 share one list; every family has five templates.
    assert five.families[1] == five.families[4] == five.families[5]
    assert all(len(v) == 5 for v in five.families.values())
    assert sorted(five.families) == list(range(7))


def test_five_type_assignment_is_deterministic_and_uniform():
    counts = Counter(choose_index(5, 0, f"textvqa/test/{i}") for i in range(10_000))
    assert set(counts) == set(range(5))
    assert all(1850 <= c <= 2150 for c in counts.values()), counts
    assert [choose_index(5, 0, f"u{i}") for i in range(50)] == [choose_index(5, 0, f"u{i}") for i in range(50)]
    assert [choose_index(5, 0, f"u{i}") for i in range(50)] != [choose_index(5, 1, f"u{i}") for i in range(50)]


def test_composition_rules():
    assert compose_prompt("What is it?", "Answer briefly.", "question_instruction") == "What is it?\nAnswer briefly."
    assert compose_prompt("", "Describe it.\nIn one sentence.", "instruction_only") == "Describe it.\nIn one sentence."


def test_cvit_benchmark_definition():
    spec = load_benchmark("cvit")
    assert spec.upstream == ("scienceqa", "textvqa", "flickr30k", "imagenet", "gqa", "vqav2")
    assert [d.task for d in spec.downstream] == ["vizwiz", "textcaps", "ocrvqa", "places365"]
    assert spec.downstream_spec("places365").shots == (5, 10)
    # Downstream families reuse upstream ones (spec 1.8.3).
    assert (spec.task("vizwiz").family, spec.task("ocrvqa").family, spec.task("textcaps").family) == (1, 1, 2)
    assert {t: spec.task(t).max_new_tokens for t in spec.all_tasks()} == {
        "scienceqa": 1024, "textvqa": 128, "flickr30k": 128, "imagenet": 1024, "gqa": 128, "vqav2": 1024,
        "vizwiz": 128, "textcaps": 128, "ocrvqa": 128, "places365": 1024}
    assert spec.task("flickr30k").metric("compat") == "cider_d_bestref@whitespace"
    assert spec.task("vqav2").metric("standard") == "vqa_soft@m4c"
    assert len(upstream_cells(6, "lower")) == 21
    assert len(upstream_cells(6, "full")) == 36
    assert upstream_cells(6, "final") == [(6, i) for i in range(1, 7)]


# --- the cvit-files loaders ----------------------------------------------------------------------------

def test_scienceqa_joined_with_official_problems(prepared_single):
    folder = prepared_single.folder
    test = _by_uid(folder, "scienceqa/test.parquet")
    s = test["scienceqa/test/100"]
    assert s.choices == ["red", "green"] and s.references == ["A"] and s.target == "A"
    assert s.question == "Which color is item 0?\nA. red\nB. green"   # empty hint: no Context line
    assert s.instruction == "Answer with the option's letter from the given choices directly."
    assert s.prompt == s.question + "\n" + s.instruction
    assert s.image == "images/scienceqa/test/100/image.png"
    assert s.meta["grade"] == "grade1" and s.meta["ins_type"] == 0
    assert test["scienceqa/test/101"].image is None          # text-only problem
    assert test["scienceqa/test/101"].question.startswith("Context: Item 1 is shown.\n")
    assert test["scienceqa/test/103"].choices == ["red", "green", "blue"]
    train = _by_uid(folder, "scienceqa/train.parquet")
    assert len(train) == 6 and train["scienceqa/train/106"].target == "A"


def test_textvqa_gqa_and_captions_get_what_scorers_need(prepared_single):
    folder = prepared_single.folder
    tv = _by_uid(folder, "textvqa/test.parquet")["textvqa/test/5003"]
    assert len(tv.references) == 10 and tv.references[:4] == ["stop"] * 4
    assert tv.target == "stop" and tv.meta["question_id_type"] == "int"
    assert tv.question == "What is shown in picture 3?" and tv.instruction == "Answer the question using a single word or phrase."
    gqa = _by_uid(folder, "gqa/test.parquet")
    assert gqa["gqa/test/20190002"].meta["is_balanced"] is False
    assert gqa["gqa/test/20190001"].meta["structural"] == "query"
    assert gqa["gqa/test/20190001"].references == ["cat"]
    fl = _by_uid(folder, "flickr30k/test.parquet")["flickr30k/test/2"]
    assert fl.references == ["a caption number 2 .", "another caption 2 .", "x y z ."]
    assert fl.question == "" and fl.prompt == fl.instruction
    tc = _by_uid(folder, "textcaps/test.parquet")["textcaps/test/0"]
    assert tc.references == ["a caption number 0 ."] and tc.meta["answer_is_string"] is True
    assert _by_uid(folder, "imagenet/test.parquet")["imagenet/test/1"].references == ["goldfish"]


def test_manifest_lists_every_file_with_rows_hashes_and_fingerprints(prepared_single):
    folder = prepared_single.folder
    manifest = read_manifest(folder)
    assert manifest["benchmark"] == {"id": "cvit", "version": "1.0"}
    assert manifest["template_set"] == "single" and manifest["seed"] == 0
    assert set(manifest["files"]) >= {"places365/fewshot-5.parquet", "places365/fewshot-10.parquet", "vizwiz/test.parquet"}
    for rel, info in manifest["files"].items():
        assert info["sha256"] == sha256_file(folder / rel)
        assert info["rows"] == len(read_samples(folder / rel))
    assert manifest["files"]["places365/fewshot-5.parquet"]["rows"] == 3
    assert len({t["fingerprint"] for t in manifest["tasks"].values()}) == 10
    PreparedData.open(folder).verify()
    assert resolve_prepared(folder.parent, "cvit") == folder and resolve_prepared(folder, None) == folder


def test_prepare_is_byte_identical_on_rerun(raw_single, tmp_path):
    a = _prepare(raw_single, tmp_path / "a").folder
    b = _prepare(raw_single, tmp_path / "b").folder
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # Re-running into the same folder replaces it with identical content.
    before = sha256_file(a / "manifest.json")
    _prepare(raw_single, tmp_path / "a")
    assert sha256_file(a / "manifest.json") == before


def test_five_type_files_recover_template_indices(tmp_path):
    raw = make_cvit_files(tmp_path / "raw", "five")
    result = _prepare(raw, tmp_path / "out", templates="five")
    test = read_samples(result.folder / "textvqa/test.parquet")
    assert [s.template_index for s in test] == [i % 5 for i in range(6)]
    assert all(s.template_set == "five" for s in test)
    summary = {(r.task, r.split): r for r in result.summary}
    assert summary[("textvqa", "test")].templates == {0: 2, 1: 1, 2: 1, 3: 1, 4: 1}


def test_limit_per_split_is_a_deterministic_subset(raw_single, tmp_path):
    a = _prepare(raw_single, tmp_path / "a", limit_per_split=3, tasks=["vqav2"])
    b = _prepare(raw_single, tmp_path / "b", limit_per_split=3, tasks=["vqav2"])
    ua = [s.uid for s in read_samples(a.folder / "vqav2/test.parquet")]
    assert len(ua) == 3 and ua == [s.uid for s in read_samples(b.folder / "vqav2/test.parquet")]
    assert list(a.manifest["tasks"]) == ["vqav2"]


# --- bad input ------------------------------------------------------------------------------------------

def _no_leftovers(out: Path) -> None:
    assert not (out / "cvit").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_missing_file_names_the_expected_path(tmp_path, raw_single):
    raw = make_cvit_files(tmp_path / "raw", "single")
    (raw / "Instructions_Single" / "GQA" / "test.json").unlink()
    with pytest.raises(MissingFileError) as exc:
        _prepare(raw, tmp_path / "out")
    assert "Instructions_Single/GQA/test.json" in str(exc.value) and "gqa" in str(exc.value)
    _no_leftovers(tmp_path / "out")


def test_malformed_json_reports_line_and_column(tmp_path):
    raw = make_cvit_files(tmp_path / "raw", "single")
    path = raw / "Instructions_Single" / "VQAv2" / "val.json"
    path.write_text('[\n {"question_id": 1,\n  "text": "x" "answer": "y"}\n]')
    with pytest.raises(DataError) as exc:
        _prepare(raw, tmp_path / "out")
    assert str(path) in str(exc.value) and "line 3" in str(exc.value)
    _no_leftovers(tmp_path / "out")


def test_record_without_required_field_names_file_record_and_field(tmp_path):
    raw = make_cvit_files(tmp_path / "raw", "single")
    path = raw / "Instructions_Single" / "OCRVQA" / "test.json"
    recs = json.loads(path.read_text())
    del recs[2]["answer"]
    path.write_text(json.dumps(recs))
    with pytest.raises(DataError) as exc:
        _prepare(raw, tmp_path / "out")
    err = exc.value
    assert (err.file, err.record, err.field) == (str(path), "761183272_2", "answer")
    assert "OCRVQA/test.json: record 761183272_2: field 'answer'" in str(err)


def test_unknown_question_ids_in_joined_files_are_errors(tmp_path):
    raw = make_cvit_files(tmp_path / "raw", "single")
    path = raw / "Instructions_Single" / "GQA" / "test.json"
    recs = json.loads(path.read_text())
    recs[0]["question_id"] = "999999"
    path.write_text(json.dumps(recs))
    with pytest.raises(DataError, match="testdev_balanced_questions.json") as exc:
        _prepare(raw, tmp_path / "out")
    assert exc.value.record == "999999" and exc.value.field == "question_id"


def test_missing_images_fail_unless_allowed_then_listed(tmp_path):
    raw = make_cvit_files(tmp_path / "raw", "single")
    for i in range(3):
        (raw / "images" / "vizwiz" / f"{i}.png").unlink()
    with pytest.raises(MissingImagesError) as exc:
        _prepare(raw, tmp_path / "out")
    assert "3 samples" in str(exc.value) and "images/vizwiz/0.png" in str(exc.value)
    _no_leftovers(tmp_path / "out")
    result = _prepare(raw, tmp_path / "out", allow_missing_images=True)
    left = result.manifest["left_out"]["vizwiz/test"]
    assert [x["image"] for x in left] == [f"images/vizwiz/{i}.png" for i in range(3)]
    assert result.manifest["files"]["vizwiz/test.parquet"]["rows"] == 3


def test_interrupt_leaves_nothing_half_written(tmp_path, monkeypatch):
    raw = make_cvit_files(tmp_path / "raw", "single")
    import cvit_bench.data.prepare as prep

    calls = {"n": 0}
    real = prep.write_samples

    def flaky(path, samples):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real(path, samples)

    monkeypatch.setattr(prep, "write_samples", flaky)
    with pytest.raises(KeyboardInterrupt):
        _prepare(raw, tmp_path / "out")
    _no_leftovers(tmp_path / "out")


def test_readers_reject_unknown_schema_versions(prepared_single, tmp_path):
    src = prepared_single.folder / "vizwiz/test.parquet"
    table = pq.read_table(src)
    pq.write_table(table.replace_schema_metadata({b"cvit_bench.schema_version": b"99"}), tmp_path / "x.parquet")
    with pytest.raises(SchemaVersionError, match="99"):
        read_samples(tmp_path / "x.parquet")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "y.parquet")
    with pytest.raises(DataError, match="not a cvit-bench sample file"):
        read_samples(tmp_path / "y.parquet")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text('{"schema_version": 7}')
    with pytest.raises(SchemaVersionError):
        read_manifest(tmp_path / "m")
    assert samples_to_table(read_samples(src)).schema.metadata[b"cvit_bench.schema_version"] == b"1"


def test_unknown_template_set_and_task_are_clear_errors(raw_single, tmp_path):
    with pytest.raises(CvitError, match="template sets single, five"):
        _prepare(raw_single, tmp_path / "o", templates="ten")
    with pytest.raises(CvitError, match="valid task"):
        _prepare(raw_single, tmp_path / "o", tasks=["nope"])


# --- export round trip and CLI --------------------------------------------------------------------------

@pytest.mark.parametrize("templates", ["single", "five"])
def test_export_llava_round_trip_gives_the_same_samples(tmp_path, templates):
    raw = make_cvit_files(tmp_path / "raw", templates)
    first = _prepare(raw, tmp_path / "p1", templates=templates)
    set_dir = export(first.folder.parent, tmp_path / "exported", benchmark="cvit")
    train = json.loads((set_dir / "TextVQA" / "train.json").read_text())
    assert train[0]["conversations"][0]["value"].startswith("<image>\n")
    evalf = json.loads((set_dir / "TextVQA" / "val.json").read_text())
    assert isinstance(evalf[0]["question_id"], int) and set(evalf[0]) == {"question_id", "image", "text", "answer"}
    second = prepare("cvit", templates=templates, source="cvit-files", raw_root=raw, out=tmp_path / "p2",
                     paths={"instructions": str(set_dir)})
    for rel in first.manifest["files"]:
        assert read_samples(first.folder / rel) == read_samples(second.folder / rel), rel
        assert first.manifest["files"][rel]["sha256"] == second.manifest["files"][rel]["sha256"]


def test_cli_prepare_prints_summary_and_list_shows_benchmark(raw_single, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["prepare", "--benchmark", "cvit", "--templates", "single", "--source", "cvit-files",
                               "--raw-root", str(raw_single), "--out", str(tmp_path / "o"), "--tasks", "textvqa,vizwiz"])
    assert res.exit_code == 0, res.output
    assert "textvqa" in res.output and "vizwiz" in res.output and "0:6" in res.output
    res = runner.invoke(main, ["prepare", "--source", "cvit-files", "--raw-root", str(tmp_path / "nowhere"),
                               "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "missing" in res.output
    res = runner.invoke(main, ["list"])
    assert res.exit_code == 0 and "scienceqa" in res.output and "five" in res.output


def test_verify_images_counts_undecodable_files_as_missing(tmp_path):
    raw = make_cvit_files(tmp_path / "raw", "single")
    (raw / "images" / "ocrvqa" / "1.png").write_bytes(b"\x89PNG garbage")
    # Without verification the file exists, so prepare accepts it (the runner reports it at decode time).
    assert _prepare(raw, tmp_path / "a", tasks=["ocrvqa"]).manifest["left_out"] == {}
    with pytest.raises(MissingImagesError, match="images/ocrvqa/1.png"):
        _prepare(raw, tmp_path / "b", tasks=["ocrvqa"], verify_images=True)
    result = _prepare(raw, tmp_path / "c", tasks=["ocrvqa"], verify_images=True, allow_missing_images=True)
    assert [x["image"] for x in result.manifest["left_out"]["ocrvqa/test"]] == ["images/ocrvqa/1.png"]


def test_scienceqa_file_missing_official_test_problems_is_noted(tmp_path):
    raw = make_cvit_files(tmp_path / "raw", "single")
    path = raw / "Instructions_Single" / "ScienceQA" / "test.json"
    recs = json.loads(path.read_text())
    path.write_text(json.dumps(recs[1:]))
    result = _prepare(raw, tmp_path / "out", tasks=["scienceqa"])
    # The compat scorer's denominator is the whole official test split: the manifest says what the file lacks.
    note = result.manifest["notes"]["scienceqa"]
    assert (note["official_test_missing"], note["official_test_missing_examples"]) == (1, ["100"])
    # ... and what the compat scorer needs to loop over the official split (problem 100: gold A of 2 options)
    assert note["compat_universe"] == {"source": "pid_splits.json[test]", "first": "100", "n": 6, "not_in_split": [],
                                       "extra": [{"id": "100", "gold": "A", "n_choices": 2}]}
