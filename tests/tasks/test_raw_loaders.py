"""Raw-dataset loaders (``prepare --source raw``): per-dataset field-by-field expectations on generated fixtures in
the official formats, one broken record per dataset, layout variants, the Hugging Face ScienceQA copy, subsets,
k-shot draws, missing images, and the whole cvit benchmark prepared in both template sets."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from cvit_bench.benchmark import load_benchmark
from cvit_bench.errors import DataError, MissingFileError
from cvit_bench.data.prepare import MissingImagesError, prepare
from cvit_bench.formats.sample import read_samples
from cvit_bench.tasks import LoadContext, get_source
from cvit_bench.data.templates import compose_prompt, load_template_set
from raw_fixtures import WRITERS, image, make_raw_root

SPEC = load_benchmark("cvit")


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    return make_raw_root(tmp_path_factory.mktemp("raw") / "raw")


def ctx_for(root: Path, *, seed: int = 0, paths: dict | None = None, template_set: str = "single",
            image_root: Path | None = None) -> LoadContext:
    return LoadContext(benchmark=SPEC, template_set=load_template_set(template_set), seed=seed, raw_root=root,
                       image_root=image_root or root, paths={k: Path(v) for k, v in (paths or {}).items()})


def load(root: Path, task: str, split: str, *, task_spec=None, **kw):
    return get_source("raw").load(ctx_for(root, **kw), task_spec or SPEC.task(task), split)


def with_splits(task: str, splits: dict, **extra):
    """The task's spec with another ``raw`` block (the YAML is what users edit; tests vary it in memory)."""
    t = SPEC.task(task)
    return dataclasses.replace(t, raw={**t.raw, "splits": splits, **extra})


def rows(samples) -> list[dict]:
    return [{"uid": s.uid, "image": s.image, "question": s.question, "target": s.target, "references": s.references,
             "choices": s.choices, "meta": s.meta} for s in samples]


def qa(uid, image, question, target, references, meta):
    return {"uid": uid, "image": image, "question": question, "target": target, "references": references,
            "choices": [], "meta": meta}


# --- field-by-field expectations, one test per dataset ------------------------------------------------------

def test_scienceqa(raw_root):
    meta = {"question_id_type": "str", "category": "category", "topic": "topic", "skill": "skill"}
    assert rows(load(raw_root, "scienceqa", "train")) == [
        {"uid": "scienceqa/train/2", "image": None,
         "question": "Which word comes first in alphabetical order?\nA. ant\nB. bee\nC. cat", "target": "A",
         "references": ["A"], "choices": ["ant", "bee", "cat"],
         "meta": {**meta, "grade": "grade2", "subject": "language science"}},
        {"uid": "scienceqa/train/1", "image": "scienceqa/images/train/1/image.png",
         "question": "Context: Look at the pictures.\nWhich animal is a mammal?\nA. frog\nB. dog", "target": "B",
         "references": ["B"], "choices": ["frog", "dog"], "meta": {**meta, "grade": "grade3", "subject": "natural science"}},
    ]
    assert rows(load(raw_root, "scienceqa", "test")) == [
        {"uid": "scienceqa/test/4", "image": None, "question": "Which is a solid?\nA. water\nB. ice", "target": "B",
         "references": ["B"], "choices": ["water", "ice"], "meta": {**meta, "grade": "grade1", "subject": "natural science"}},
        {"uid": "scienceqa/test/3", "image": "scienceqa/images/test/3/image.png",
         "question": "Context: Paris is a city.\nIt is in Europe.\nWhat is the capital of France?\nA. Berlin\nB. Paris\nC. Rome\nD. Madrid",
         "target": "B", "references": ["B"], "choices": ["Berlin", "Paris", "Rome", "Madrid"],
         "meta": {**meta, "grade": "grade5", "subject": "social science"}},
    ]
    # minival problems keep their own `split` as image folder (images/val/...)
    minival = load(raw_root, "scienceqa", "test", task_spec=with_splits("scienceqa", {"test": {"official": "minival"}}))
    assert [s.image for s in minival] == ["scienceqa/images/val/5/image.png"]


def test_textvqa(raw_root):
    img = "textvqa/train_val_images/train_images/"
    assert rows(load(raw_root, "textvqa", "train")) == [
        qa("textvqa/train/101", img + "0000aaaa0000aaaa.jpg", "what is written on the sign?", "stop",
           ["stop"] * 6 + ["stop sign"] * 4, {"question_id_type": "int", "image_id": "0000aaaa0000aaaa"}),
        # 5/5 tie: the first-occurring answer is the target
        qa("textvqa/train/102", img + "0000bbbb0000bbbb.jpg", "what brand is this?", "nike", ["nike", "adidas"] * 5,
           {"question_id_type": "int", "image_id": "0000bbbb0000bbbb"}),
    ]
    assert rows(load(raw_root, "textvqa", "test")) == [
        qa("textvqa/test/201", img + "0000cccc0000cccc.jpg", "what number is shown?", "seven", ["7"] * 3 + ["seven"] * 7,
           {"question_id_type": "int", "image_id": "0000cccc0000cccc"}),
        qa("textvqa/test/202", img + "0000aaaa0000aaaa.jpg", "what color is the sign?", "red", ["red"] * 10,
           {"question_id_type": "int", "image_id": "0000aaaa0000aaaa"}),
    ]
    official_test = load(raw_root, "textvqa", "test", task_spec=with_splits("textvqa", {"test": {"official": "test"}}))
    assert rows(official_test) == [qa("textvqa/test/301", "textvqa/test_images/1111dddd1111dddd.jpg", "what time is it?",
                                      "", [], {"question_id_type": "int", "image_id": "1111dddd1111dddd"})]


def test_flickr30k(raw_root):
    assert rows(load(raw_root, "flickr30k", "test")) == [{
        "uid": "flickr30k/test/1000268201", "image": "flickr30k/flickr30k-images/1000268201.jpg", "question": "",
        "target": "A child in a pink dress is climbing stairs.",
        "references": ["A child in a pink dress is climbing stairs.", "A little girl climbing into a playhouse.",
                       "A girl on stairs.", "A small girl goes up.", "A child in pink."],
        "choices": [], "meta": {"question_id_type": "str", "imgid": 2, "sentids": [10, 11, 12, 13, 14]}}]
    train = load(raw_root, "flickr30k", "train")
    assert [s.uid for s in train] == ["flickr30k/train/1000092795"]
    assert train[0].target == "Two young guys with shaggy hair look at their hands." and len(train[0].references) == 5


def test_imagenet(raw_root):
    tench, gold = ["tench", "Tinca tinca"], ["goldfish", "Carassius auratus"]
    shark = ["great white shark", "white shark", "man-eater", "man-eating shark", "Carcharodon carcharias"]
    tr, va = "imagenet/ILSVRC/Data/CLS-LOC/train/", "imagenet/ILSVRC/Data/CLS-LOC/val/"

    def cls(uid, image, names, wnid):
        return qa(uid, image, "", names[0], names, {"question_id_type": "str", "wnid": wnid})

    assert rows(load(raw_root, "imagenet", "train")) == [
        cls("imagenet/train/n01440764_10026", tr + "n01440764/n01440764_10026.JPEG", tench, "n01440764"),
        cls("imagenet/train/n01440764_10027", tr + "n01440764/n01440764_10027.JPEG", tench, "n01440764"),
        cls("imagenet/train/n01443537_1", tr + "n01443537/n01443537_1.JPEG", gold, "n01443537"),
    ]
    # the CSV is unsorted; samples follow ImageId; the label is the first token of PredictionString
    assert rows(load(raw_root, "imagenet", "test")) == [
        cls("imagenet/test/ILSVRC2012_val_00000001", va + "ILSVRC2012_val_00000001.JPEG", tench, "n01440764"),
        cls("imagenet/test/ILSVRC2012_val_00000002", va + "ILSVRC2012_val_00000002.JPEG", shark, "n01484850"),
        cls("imagenet/test/ILSVRC2012_val_00000003", va + "ILSVRC2012_val_00000003.JPEG", gold, "n01443537"),
    ]


def test_imagenet_class_list_from_yaml(raw_root):
    only_gold = dataclasses.replace(SPEC.task("imagenet"), raw={**SPEC.task("imagenet").raw, "classes": ["n01443537"]})
    assert [s.source_id for s in load(raw_root, "imagenet", "test", task_spec=only_gold)] == ["ILSVRC2012_val_00000003"]
    absent = dataclasses.replace(only_gold, raw={**only_gold.raw, "classes": ["n01443537", "n09999999", "n08888888"]})
    with pytest.raises(DataError, match="n09999999, n08888888") as exc:
        load(raw_root, "imagenet", "train", task_spec=absent)
    assert exc.value.field == "classes"


def test_imagenet_class_folder_outside_the_mapping_is_named(tmp_path):
    WRITERS["imagenet"](tmp_path / "imagenet")
    image(tmp_path / "imagenet" / "ILSVRC" / "Data" / "CLS-LOC" / "train" / "n00000001" / "x.JPEG")
    with pytest.raises(DataError) as exc:
        load(tmp_path, "imagenet", "train")
    assert (exc.value.record, exc.value.field) == ("n00000001", "wnid") and "LOC_synset_mapping.txt" in str(exc.value)


def test_gqa(raw_root):
    def meta(image_id, balanced, structural, semantic, detailed):
        return {"question_id_type": "str", "image_id": image_id, "is_balanced": balanced, "structural": structural,
                "semantic": semantic, "detailed": detailed}

    assert rows(load(raw_root, "gqa", "test")) == [
        qa("gqa/test/20968379", "gqa/images/n288870.jpg", "Do the shorts have dark color?", "yes", ["yes"],
           meta("n288870", True, "verify", "attr", "verifyAttr")),
        qa("gqa/test/201640614", "gqa/images/n161313.jpg", "Who is wearing the dress?", "woman", ["woman"],
           meta("n161313", False, "query", "rel", "relS")),
    ]
    assert [s.source_id for s in load(raw_root, "gqa", "train")] == ["02930152", "07333408"]


def test_vqav2(raw_root):
    train = load(raw_root, "vqav2", "train")
    assert rows(train) == [
        qa("vqav2/train/9000", "vqav2/train2014/COCO_train2014_000000000009.jpg", "How many cats are there?", "2",
           ["2"] * 8 + ["two"] * 2, {"question_id_type": "int", "image_id": 9, "question_type": "how many",
                                     "answer_type": "number"}),
        qa("vqav2/train/9001", "vqav2/train2014/COCO_train2014_000000000009.jpg", "Is it sunny?", "yes",
           ["yes"] * 9 + ["no"], {"question_id_type": "int", "image_id": 9, "question_type": "is it",
                                  "answer_type": "yes/no"}),
    ]
    assert rows(load(raw_root, "vqav2", "test")) == [
        qa("vqav2/test/42000", "vqav2/val2014/COCO_val2014_000000000042.jpg", "What color is the bus?", "red",
           ["red"] * 7 + ["maroon"] * 2 + ["red and white"], {"question_id_type": "int", "image_id": 42,
                                                              "question_type": "what color", "answer_type": "other"}),
    ]


def test_vizwiz(raw_root):
    assert rows(load(raw_root, "vizwiz", "test")) == [
        qa("vizwiz/test/VizWiz_val_00000001", "vizwiz/val/VizWiz_val_00000001.jpg", "What is this?", "soup",
           ["soup"] * 4 + ["tomato soup"] * 4 + ["can"] * 2,
           {"question_id_type": "str", "answerable": 1, "answer_type": "other"}),
        qa("vizwiz/test/VizWiz_val_00000002", "vizwiz/val/VizWiz_val_00000002.jpg", "What color is this shirt?",
           "unanswerable", ["unanswerable"] * 7 + ["blue"] * 3,
           {"question_id_type": "str", "answerable": 0, "answer_type": "unanswerable"}),
    ]
    test = load(raw_root, "vizwiz", "test", task_spec=with_splits("vizwiz", {"test": {"official": "test"}}))
    assert rows(test) == [qa("vizwiz/test/VizWiz_test_00000001", "vizwiz/test/VizWiz_test_00000001.jpg", "Is it dark?",
                             "", [], {"question_id_type": "str", "answerable": None, "answer_type": None})]


def test_textcaps(raw_root):
    img = "textvqa/train_val_images/train_images/"   # TextCaps reuses TextVQA's images
    assert rows(load(raw_root, "textcaps", "test")) == [
        qa("textcaps/test/0000cccc0000cccc", img + "0000cccc0000cccc.jpg", "", "A sign with the number 7 on it.",
           ["A sign with the number 7 on it.", "The number seven.", "A white sign.", "A sign reading 7.", "Seven in black."],
           {"question_id_type": "str", "image_name": "0000cccc0000cccc", "caption_ids": [1, 2, 3, 4, 5]}),
        qa("textcaps/test/0000eeee0000eeee", img + "0000eeee0000eeee.jpg", "", "A bottle of Coca Cola.",
           ["A bottle of Coca Cola.", "A coke bottle.", "A red label.", "A soda.", "A drink."],
           {"question_id_type": "str", "image_name": "0000eeee0000eeee", "caption_ids": [6, 7, 8, 9, 10]}),
    ]


def test_ocrvqa(raw_root):
    cal = {"question_id_type": "str", "book_id": "761183272", "title": "Mom's Family Wall Calendar", "genre": "Calendars"}
    assert rows(load(raw_root, "ocrvqa", "test")) == [
        qa("ocrvqa/test/761183272_0", "ocrvqa/images/761183272.jpg", "Who wrote this book?", "Sandra Boynton",
           ["Sandra Boynton"], cal),
        qa("ocrvqa/test/761183272_1", "ocrvqa/images/761183272.jpg", "What is the genre of this book?", "Calendars",
           ["Calendars"], cal),
        qa("ocrvqa/test/B00ABC1234_0", "ocrvqa/images/B00ABC1234.png", "What is the title of this book?", "Python Basics",
           ["Python Basics"], {"question_id_type": "str", "book_id": "B00ABC1234", "title": "Python Basics",
                               "genre": "Computers & Technology"}),
    ]
    train = load(raw_root, "ocrvqa", "test", task_spec=with_splits("ocrvqa", {"test": {"official": "train"}}))
    assert [s.source_id for s in train] == ["1880418622_0"]


def test_places365(raw_root):
    def place(uid, image, text, cat, index):
        return qa(uid, image, "", text, [text], {"question_id_type": "str", "category": cat, "class_index": index})

    assert rows(load(raw_root, "places365", "test")) == [
        place("places365/test/Places365_val_00000001.jpg", "places365/val_256/Places365_val_00000001.jpg",
              "apartment building outdoor", "/a/apartment_building/outdoor", 1),
        place("places365/test/Places365_val_00000002.jpg", "places365/val_256/Places365_val_00000002.jpg",
              "airfield", "/a/airfield", 0),
        place("places365/test/Places365_val_00000003.jpg", "places365/val_256/Places365_val_00000003.jpg",
              "bakery shop", "/b/bakery/shop", 2),
        place("places365/test/Places365_val_00000004.jpg", "places365/val_256/Places365_val_00000004.jpg",
              "airfield", "/a/airfield", 0),
    ]
    shot = load(raw_root, "places365", "fewshot-5")[0]
    assert shot.image == f"places365/data_256/{shot.source_id}" and shot.meta["shots"] == 5
    bakery = dataclasses.replace(SPEC.task("places365"), raw={**SPEC.task("places365").raw, "classes": ["/b/bakery/shop"]})
    assert [s.target for s in load(raw_root, "places365", "fewshot-10", task_spec=bakery)] == ["bakery shop"] * 7
    unknown = dataclasses.replace(bakery, raw={**bakery.raw, "classes": ["/b/bakery/shop", "/z/zoo"]})
    with pytest.raises(DataError, match="/z/zoo"):
        load(raw_root, "places365", "test", task_spec=unknown)


def test_raw_samples_carry_no_instruction(raw_root):
    for task in SPEC.all_tasks():
        for split in get_source("raw").splits(ctx_for(raw_root), SPEC.task(task)):
            for s in load(raw_root, task, split):
                assert (s.instruction, s.prompt, s.template_index) == ("", "", 0), s.uid
                assert s.uid == f"{task}/{split}/{s.source_id}"


# --- k-shot and subsets ----------------------------------------------------------------------------------------

def _per_class(samples):
    out = {}
    for s in samples:
        out.setdefault(s.target, []).append(s.source_id)
    return out


def test_places365_kshot_per_class_is_deterministic_and_nested(raw_root):
    five, ten = load(raw_root, "places365", "fewshot-5"), load(raw_root, "places365", "fewshot-10")
    assert {k: len(v) for k, v in _per_class(five).items()} == {"airfield": 5, "apartment building outdoor": 3,
                                                                "bakery shop": 5}
    assert {k: len(v) for k, v in _per_class(ten).items()} == {"airfield": 10, "apartment building outdoor": 3,
                                                               "bakery shop": 7}
    assert {s.source_id for s in five} <= {s.source_id for s in ten}
    assert [s.uid for s in five] == [s.uid for s in load(raw_root, "places365", "fewshot-5")]
    ids = [s.source_id for s in five]
    assert ids == sorted(ids)                       # file order is kept
    draws = {tuple(_per_class(load(raw_root, "places365", "fewshot-5", seed=seed))["airfield"]) for seed in range(4)}
    assert len(draws) > 1                           # the seed changes the draw


def test_yaml_subset_n_is_deterministic_by_seed(raw_root):
    spec = with_splits("places365", {"test": {"official": "train", "n": 6}})
    a = load(raw_root, "places365", "test", task_spec=spec)
    assert len(a) == 6
    assert [s.uid for s in a] == [s.uid for s in load(raw_root, "places365", "test", task_spec=spec)]
    assert [s.source_id for s in a] == sorted(s.source_id for s in a)
    subsets = {tuple(s.uid for s in load(raw_root, "places365", "test", task_spec=spec, seed=seed)) for seed in range(4)}
    assert len(subsets) > 1


def test_source_notes_record_the_draw_rules(raw_root):
    notes = get_source("raw").notes(ctx_for(raw_root, seed=3), SPEC.task("places365"))
    assert notes["splits"]["fewshot-5"] == {"official": "train", "n": None, "shots": 5}
    assert notes["seed"] == 3 and "kshot:<seed>" in notes["kshot_rule"] and "raw-subset" in notes["subset_rule"]
    assert "kshot_rule" not in get_source("raw").notes(ctx_for(raw_root), SPEC.task("vqav2"))


def test_bad_raw_block_is_named(raw_root):
    with pytest.raises(DataError) as exc:
        load(raw_root, "gqa", "test", task_spec=with_splits("gqa", {"test": {"official": "testdev_balanced", "n": 0}}))
    assert (exc.value.record, exc.value.field) == ("tasks.gqa.raw.splits.test", "n")
    no_raw = dataclasses.replace(SPEC.task("gqa"), raw={})
    with pytest.raises(DataError, match="raw.splits"):
        get_source("raw").splits(ctx_for(raw_root), no_raw)


# --- one broken record per dataset ------------------------------------------------------------------------------

def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _edit_lines(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


BROKEN = {
    # dataset: (split, break(folder), file name, record, field)
    "scienceqa": ("test", lambda f: _edit_json(f / "problems.json", lambda d: d["3"].update(answer=7)),
                  "problems.json", "3", "answer"),
    "textvqa": ("test", lambda f: _edit_json(f / "TextVQA_0.5.1_val.json", lambda d: d["data"][0]["answers"].pop()),
                "TextVQA_0.5.1_val.json", 201, "answers"),
    "flickr30k": ("test", lambda f: _edit_json(f / "dataset_flickr30k.json",
                                               lambda d: d["images"][2]["sentences"][1].pop("raw")),
                  "dataset_flickr30k.json", "1000268201.jpg", "sentences"),
    "imagenet": ("test", lambda f: _edit_lines(f / "LOC_val_solution.csv", "00002,n01484850", "00002,n09999999"),
                 "LOC_val_solution.csv", "ILSVRC2012_val_00000002", "PredictionString"),
    "gqa": ("test", lambda f: _edit_json(f / "testdev_balanced_questions.json", lambda d: d["201640614"].pop("answer")),
            "testdev_balanced_questions.json", "201640614", "answer"),
    "vqav2": ("test", lambda f: _edit_json(f / "v2_mscoco_val2014_annotations.json",
                                           lambda d: d["annotations"][0]["answers"].pop()),
              "v2_mscoco_val2014_annotations.json", 42000, "answers"),
    "vizwiz": ("test", lambda f: _edit_json(f / "Annotations" / "val.json", lambda d: d[1].update(answerable=2)),
               "val.json", "VizWiz_val_00000002.jpg", "answerable"),
    "textcaps": ("test", lambda f: _edit_json(f / "TextCaps_0.1_val.json", lambda d: d["data"][3].update(caption_str=5)),
                 "TextCaps_0.1_val.json", "0000eeee0000eeee", "caption_str"),
    "ocrvqa": ("test", lambda f: _edit_json(f / "dataset.json", lambda d: d["761183272"]["answers"].pop()),
               "dataset.json", "761183272", "answers"),
    "places365": ("test", lambda f: _edit_lines(f / "places365_val.txt", "00002.jpg 0", "00002.jpg 99"),
                  "places365_val.txt", "Places365_val_00000002.jpg", "index"),
}


@pytest.mark.parametrize("dataset", sorted(BROKEN))
def test_broken_record_names_file_record_and_field(tmp_path, dataset):
    split, breaker, file_name, record, field = BROKEN[dataset]
    WRITERS[dataset](tmp_path / dataset)
    load(tmp_path, dataset, split)   # intact first: the break is what fails
    breaker(tmp_path / dataset)
    with pytest.raises(DataError) as exc:
        load(tmp_path, dataset, split)
    err = exc.value
    assert Path(err.file).name == file_name and err.record == record and err.field == field, str(err)
    assert file_name in str(err) and str(record) in str(err) and repr(field) in str(err)


@pytest.mark.parametrize("dataset", sorted(BROKEN))
def test_missing_annotation_file_is_named(tmp_path, dataset):
    split = BROKEN[dataset][0]
    with pytest.raises(MissingFileError) as exc:
        load(tmp_path, dataset, split)
    assert str(tmp_path / dataset) in str(exc.value)


# --- layout variants and overrides ------------------------------------------------------------------------------

def test_layout_variants_and_path_override(tmp_path):
    root = tmp_path / "raw"
    # ScienceQA as in the repository: data/scienceqa/{problems.json, pid_splits.json, images/}
    WRITERS["scienceqa"](root / "scienceqa" / "data" / "scienceqa")
    assert load(root, "scienceqa", "test")[1].image == "scienceqa/data/scienceqa/images/test/3/image.png"
    # GQA questions split into parts; read in part order 1, 2, 10
    gqa = root / "gqa"
    WRITERS["gqa"](gqa)
    questions = json.loads((gqa / "testdev_balanced_questions.json").read_text())
    (gqa / "testdev_balanced_questions.json").unlink()
    parts = gqa / "questions" / "testdev_balanced_questions"
    parts.mkdir(parents=True)
    (qa1, q1), (qa2, q2) = questions.items()
    (parts / "testdev_balanced_questions_10.json").write_text(json.dumps({"999": {**q1, "question": "last?"}}))
    (parts / "testdev_balanced_questions_2.json").write_text(json.dumps({qa2: q2}))
    (parts / "testdev_balanced_questions_1.json").write_text(json.dumps({qa1: q1}))
    assert [s.source_id for s in load(root, "gqa", "test")] == [qa1, qa2, "999"]
    # --path NAME=DIR outside the image root: image paths stay absolute and exist
    elsewhere = tmp_path / "elsewhere" / "viz"
    WRITERS["vizwiz"](elsewhere)
    viz = load(root, "vizwiz", "test", paths={"vizwiz": elsewhere})
    assert viz[0].image == (elsewhere / "val" / "VizWiz_val_00000001.jpg").as_posix()
    assert (root / viz[0].image).is_file()
    # TextVQA images in the canonical train_images/ win over nothing else; TextCaps finds its own images first
    WRITERS["textcaps"](root / "textcaps")
    image(root / "textcaps" / "train_images" / "0000cccc0000cccc.jpg")
    assert load(root, "textcaps", "test")[0].image == "textcaps/train_images/0000cccc0000cccc.jpg"
    # OCR-VQA: a download saved with another extension than the URL's is found
    WRITERS["ocrvqa"](root / "ocrvqa")
    (root / "ocrvqa" / "images" / "761183272.jpg").rename(root / "ocrvqa" / "images" / "761183272.png")
    assert load(root, "ocrvqa", "test")[0].image == "ocrvqa/images/761183272.png"
    # ImageNet val re-sorted into class folders
    WRITERS["imagenet"](root / "imagenet")
    val = root / "imagenet" / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    shutil.rmtree(val)
    image(val / "n01443537" / "ILSVRC2012_val_00000003.JPEG")
    (root / "imagenet" / "LOC_val_solution.csv").unlink()
    test = load(root, "imagenet", "test")
    assert [(s.source_id, s.target) for s in test] == [("ILSVRC2012_val_00000003", "goldfish")]


def test_scienceqa_hugging_face_parquet_copy(tmp_path):
    import io

    import datasets
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (5, 3), (9, 9, 9)).save(buf, format="PNG")
    png = buf.getvalue()
    rows_ = {"image": [{"bytes": png, "path": None}, None],
             "question": ["Which is a metal?", "Which word is a noun?"], "choices": [["iron", "wood"], ["run", "dog", "big"]],
             "answer": [0, 1], "hint": ["Metals conduct.", ""], "task": ["closed choice"] * 2, "grade": ["grade4", "grade2"],
             "subject": ["natural science", "language science"], "topic": ["t", "t"], "category": ["c", "c"],
             "skill": ["s", "s"], "lecture": ["", ""], "solution": ["", ""]}
    features = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                  "choices": datasets.Sequence(datasets.Value("string")), "answer": datasets.Value("int8"),
                                  **{k: datasets.Value("string") for k in ("hint", "task", "grade", "subject", "topic",
                                                                           "category", "skill", "lecture", "solution")}})
    hf = tmp_path / "ScienceQA-hf"
    (hf / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows_, features=features).to_parquet(str(hf / "data" / "test-00000-of-00001-abc.parquet"))
    root = tmp_path / "raw"
    root.mkdir()
    samples = load(root, "scienceqa", "test", paths={"scienceqa": hf})
    assert rows(samples) == [
        {"uid": "scienceqa/test/test-0", "image": "scienceqa-hf/test/0.png",
         "question": "Context: Metals conduct.\nWhich is a metal?\nA. iron\nB. wood", "target": "A", "references": ["A"],
         "choices": ["iron", "wood"], "meta": {"question_id_type": "str", "grade": "grade4", "subject": "natural science",
                                              "topic": "t", "category": "c", "skill": "s", "hf_row": 0}},
        {"uid": "scienceqa/test/test-1", "image": None, "question": "Which word is a noun?\nA. run\nB. dog\nC. big",
         "target": "B", "references": ["B"], "choices": ["run", "dog", "big"],
         "meta": {"question_id_type": "str", "grade": "grade2", "subject": "language science", "topic": "t",
                  "category": "c", "skill": "s", "hf_row": 1}},
    ]
    assert (root / "scienceqa-hf" / "test" / "0.png").read_bytes() == png
    with pytest.raises(DataError, match="validation-"):
        load(root, "scienceqa", "test", paths={"scienceqa": hf},
             task_spec=with_splits("scienceqa", {"test": {"official": "val"}}))


# --- the whole benchmark through prepare ------------------------------------------------------------------------

EXPECTED_ROWS = {"scienceqa/train": 2, "scienceqa/test": 2, "textvqa/train": 2, "textvqa/test": 2, "flickr30k/train": 1,
                 "flickr30k/test": 1, "imagenet/train": 3, "imagenet/test": 3, "gqa/train": 2, "gqa/test": 2,
                 "vqav2/train": 2, "vqav2/test": 1, "vizwiz/test": 2, "textcaps/test": 2, "ocrvqa/test": 3,
                 "places365/fewshot-5": 13, "places365/fewshot-10": 20, "places365/test": 4}


def _prepare(raw: Path, out: Path, templates: str, **kw):
    return prepare("cvit", templates=templates, source="raw", raw_root=raw, out=out, **kw)


@pytest.mark.parametrize("templates", ["single", "five"])
def test_whole_cvit_benchmark_from_one_raw_root(raw_root, tmp_path, templates):
    res = _prepare(raw_root, tmp_path / "a", templates)
    files = res.manifest["files"]
    assert {k[: -len(".parquet")]: v["rows"] for k, v in files.items()} == EXPECTED_ROWS
    assert res.manifest["source"] == "raw" and res.manifest["left_out"] == {}
    assert {v["loader_version"] for v in res.manifest["tasks"].values()} == {"raw/1"}
    # The draw rules (subsets, k-shot per class) are recorded in the manifest.
    assert res.manifest["notes"]["places365"]["splits"]["fewshot-10"]["shots"] == 10
    assert "kshot_rule" in res.manifest["notes"]["places365"]
    tset = load_template_set(templates)
    used = set()
    for rel in files:
        for s in read_samples(res.folder / rel):
            task = SPEC.task(s.task)
            assert s.template_set == templates
            assert s.instruction == tset.families[task.family][s.template_index]
            assert s.prompt == compose_prompt(s.question, s.instruction, task.composition)
            assert s.meta["ins_type"] == task.family
            used.add(s.template_index)
    assert used == ({0} if templates == "single" else set(range(5)))
    # re-running gives identical files (manifest sha256s) — determinism
    again = _prepare(raw_root, tmp_path / "b", templates)
    assert {k: v["sha256"] for k, v in again.manifest["files"].items()} == {k: v["sha256"] for k, v in files.items()}


def test_every_prepared_image_decodes_to_rgb(raw_root, tmp_path):
    """Awkward files (CMYK JPEG, palette PNG, EXIF-rotated) are referenced as they are; the runner's decoder
    (cvit_bench.data.images) turns each into RGB in the task's preprocessing mode."""
    from PIL import Image

    from cvit_bench.data.images import load_image

    res = _prepare(raw_root, tmp_path / "a", "single")
    modes = set()
    for rel in res.manifest["files"]:
        for s in read_samples(res.folder / rel):
            if s.image is None:
                continue
            with Image.open(raw_root / s.image) as raw:
                modes.add(raw.mode)
            img = load_image(raw_root / s.image, SPEC.task(s.task).image_mode)
            assert img.mode == "RGB", s.uid
    assert {"CMYK", "P", "L", "RGB"} <= modes
    rotated = read_samples(res.folder / "flickr30k/test.parquet")[0]
    assert load_image(raw_root / rotated.image, "crop").size == (4, 6)     # EXIF orientation 6 applied


def test_limit_per_split_and_seed(raw_root, tmp_path):
    res = _prepare(raw_root, tmp_path / "a", "five", limit_per_split=1, tasks=["places365", "ocrvqa"])
    assert {k: v["rows"] for k, v in res.manifest["files"].items()} == {
        "places365/fewshot-5.parquet": 1, "places365/fewshot-10.parquet": 1, "places365/test.parquet": 1,
        "ocrvqa/test.parquet": 1}
    assert res.manifest["limit_per_split"] == 1


def test_missing_images_error_and_allow_flag(tmp_path):
    root = tmp_path / "raw"
    WRITERS["vizwiz"](root / "vizwiz")
    (root / "vizwiz" / "val" / "VizWiz_val_00000002.jpg").unlink()
    with pytest.raises(MissingImagesError, match="vizwiz/test/VizWiz_val_00000002") as exc:
        _prepare(root, tmp_path / "out", "single", tasks=["vizwiz"])
    assert exc.value.missing == [("vizwiz/test/VizWiz_val_00000002", "vizwiz/val/VizWiz_val_00000002.jpg")]
    res = _prepare(root, tmp_path / "out", "single", tasks=["vizwiz"], allow_missing_images=True)
    assert res.manifest["files"]["vizwiz/test.parquet"]["rows"] == 1
    assert res.manifest["left_out"] == {"vizwiz/test": [{"uid": "vizwiz/test/VizWiz_val_00000002",
                                                         "image": "vizwiz/val/VizWiz_val_00000002.jpg"}]}


def test_cli_prepare_source_raw_with_path_override(raw_root, tmp_path):
    from click.testing import CliRunner

    from cvit_bench.cli import main

    moved = tmp_path / "vizwiz-copy"
    shutil.copytree(raw_root / "vizwiz", moved)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["prepare", "--source", "raw", "--raw-root", str(raw_root), "--out", str(out),
                                       "--tasks", "vizwiz,ocrvqa", "--templates", "five", "--path", f"vizwiz={moved}"])
    assert result.exit_code == 0, result.output
    samples = read_samples(out / "cvit" / "vizwiz" / "test.parquet")
    assert [s.image for s in samples] == [(moved / "val" / f"VizWiz_val_0000000{i}.jpg").as_posix() for i in (1, 2)]
    bad = CliRunner().invoke(main, ["prepare", "--source", "raw", "--raw-root", str(tmp_path / "nowhere"), "--out",
                                    str(out), "--tasks", "gqa"])
    assert bad.exit_code == 2 and "nowhere/gqa/train_balanced_questions.json" in bad.output
