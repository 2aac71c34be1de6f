"""Generated fixtures in each source dataset's official raw layout (docs/benchmarks/cvit.md, Source files).

``make_raw_root(root)`` writes ``root/<dataset>/`` for the ten CVIT datasets with a handful of hand-written
records and tiny images, deterministic. Each ``write_<dataset>(folder)`` writes one dataset, so a test can
re-create one and break a record. Some writers deliberately use an accepted layout variant (TextVQA images
under ``train_val_images/train_images/``, TextCaps without images of its own, VizWiz ``Annotations/``, ImageNet's
Kaggle layout with an unsorted CSV) so the variants are exercised by the whole-benchmark test.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

DATASETS = ("scienceqa", "textvqa", "flickr30k", "imagenet", "gqa", "vqav2", "vizwiz", "textcaps", "ocrvqa", "places365")
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (120, 60, 200), (10, 10, 10)]


def image(path: Path, i: int = 0, mode: str = "RGB", exif_orientation: int | None = None) -> None:
    """A 6x4 image; the format follows the suffix (``.JPEG``/``.jpg`` -> JPEG, ``.png`` -> PNG). ``mode``
    (``P``, ``CMYK``, ...) and an EXIF orientation make the awkward files real datasets contain."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    img = Image.new("RGB", (6, 4), COLORS[i % len(COLORS)])
    img = img.convert(mode) if mode != "P" else img.quantize(4)
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    img.save(path, format=fmt, **kwargs)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# --------------------------------------------------------------------------------------------- ScienceQA (c.1)
def sqa_problem(question, choices, answer, hint, image_name, split, grade, subject):
    return {"question": question, "choices": choices, "answer": answer, "hint": hint, "image": image_name,
            "task": "closed choice", "grade": grade, "subject": subject, "topic": "topic", "category": "category",
            "skill": "skill", "lecture": "A lecture.\nTwo lines.", "solution": "Because.", "split": split}


def write_scienceqa(folder: Path) -> None:
    problems = {
        "1": sqa_problem("Which animal is a mammal?", ["frog", "dog"], 1, "Look at the pictures.", "image.png",
                         "train", "grade3", "natural science"),
        "2": sqa_problem("Which word comes first in alphabetical order?", ["ant", "bee", "cat"], 0, "", None,
                         "train", "grade2", "language science"),
        "3": sqa_problem("What is the capital of France?", ["Berlin", "Paris", "Rome", "Madrid"], 1,
                         "Paris is a city.\nIt is in Europe.", "image.png", "test", "grade5", "social science"),
        "4": sqa_problem("Which is a solid?", ["water", "ice"], 1, "  ", None, "test", "grade1", "natural science"),
        "5": sqa_problem("Which is hot?", ["fire", "snow"], 0, "", "image.png", "val", "grade4", "natural science"),
    }
    write_json(folder / "problems.json", problems)
    write_json(folder / "pid_splits.json", {"train": ["2", "1"], "val": ["5"], "test": ["4", "3"], "minival": ["5"]})
    for i, (pid, split) in enumerate((("1", "train"), ("3", "test"), ("5", "val"))):
        image(folder / "images" / split / pid / "image.png", i)


# ----------------------------------------------------------------------------------------------- TextVQA (c.2)
def tvqa_question(qid, question, image_id, answers, set_name):
    rec = {"question_id": qid, "question": question, "question_tokens": question.lower().rstrip("?").split(),
           "image_id": image_id, "image_classes": ["Sign"], "image_width": 6, "image_height": 4,
           "flickr_original_url": "https://example.org/o.jpg", "flickr_300k_url": "https://example.org/s.jpg",
           "set_name": set_name}
    if answers is not None:
        rec["answers"] = answers
    return rec


def write_textvqa(folder: Path) -> None:
    train = [tvqa_question(101, "what is written on the sign?", "0000aaaa0000aaaa", ["stop"] * 6 + ["stop sign"] * 4, "train"),
             tvqa_question(102, "what brand is this?", "0000bbbb0000bbbb", ["nike", "adidas"] * 5, "train")]
    val = [tvqa_question(201, "what number is shown?", "0000cccc0000cccc", ["7"] * 3 + ["seven"] * 7, "val"),
           tvqa_question(202, "what color is the sign?", "0000aaaa0000aaaa", ["red"] * 10, "val")]
    test = [tvqa_question(301, "what time is it?", "1111dddd1111dddd", None, "test")]
    for name, data in (("train", train), ("val", val), ("test", test)):
        write_json(folder / f"TextVQA_0.5.1_{name}.json", {"dataset_type": name, "dataset_name": "textvqa",
                                                            "dataset_version": "0.5.1", "data": data})
    # the train_val_images.zip variant that keeps its top folder; TextCaps' val images live here too
    for i, stem in enumerate(("0000aaaa0000aaaa", "0000bbbb0000bbbb", "0000cccc0000cccc", "0000eeee0000eeee")):
        image(folder / "train_val_images" / "train_images" / f"{stem}.jpg", i)
    image(folder / "test_images" / "1111dddd1111dddd.jpg", 4)


# --------------------------------------------------------------------------------------------- Flickr30k (c.3)
def flickr_image(imgid, filename, split, captions):
    sentids = [imgid * 5 + k for k in range(len(captions))]
    return {"filename": filename, "imgid": imgid, "split": split, "sentids": sentids,
            "sentences": [{"raw": c, "tokens": c.lower().rstrip(".").split(), "imgid": imgid, "sentid": s}
                          for c, s in zip(captions, sentids)]}


def write_flickr30k(folder: Path) -> None:
    images = [
        flickr_image(0, "1000092795.jpg", "train", ["Two young guys with shaggy hair look at their hands.",
                                                    "Two young men hang out in the yard.", "Two men in green shirts.",
                                                    "A man in a blue shirt.", "Two friends enjoy time together."]),
        flickr_image(1, "10002456.jpg", "val", ["Workers look down from up above.", "Two men on a scaffold.",
                                               "Men working.", "Builders at work.", "A crew on a building."]),
        flickr_image(2, "1000268201.jpg", "test", ["A child in a pink dress is climbing stairs.",
                                                  "A little girl climbing into a playhouse.", "A girl on stairs.",
                                                  "A small girl goes up.", "A child in pink."]),
    ]
    write_json(folder / "dataset_flickr30k.json", {"images": images, "dataset": "flickr30k"})
    for i, rec in enumerate(images):
        image(folder / "flickr30k-images" / rec["filename"], i, exif_orientation=6 if i == 2 else None)


# ---------------------------------------------------------------------------------------------- ImageNet (c.4)
SYNSETS = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
           "n01484850": "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias"}


def write_imagenet(folder: Path) -> None:
    write_text(folder / "LOC_synset_mapping.txt", [f"{w} {n}" for w, n in SYNSETS.items()])
    train = folder / "ILSVRC" / "Data" / "CLS-LOC" / "train"
    for i, rel in enumerate(("n01440764/n01440764_10027.JPEG", "n01440764/n01440764_10026.JPEG",
                             "n01443537/n01443537_1.JPEG")):
        image(train / rel, i)
    val = folder / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    for i in (1, 2, 3):
        image(val / f"ILSVRC2012_val_0000000{i}.JPEG", i)
    write_text(folder / "LOC_val_solution.csv", [
        "ImageId,PredictionString",
        "ILSVRC2012_val_00000003,n01443537 1 2 5 4 ",
        "ILSVRC2012_val_00000001,n01440764 0 0 5 3 n01440764 1 1 4 3 ",
        "ILSVRC2012_val_00000002,n01484850 0 1 4 2 ",
    ])


# --------------------------------------------------------------------------------------------------- GQA (c.5)
def gqa_question(image_id, question, answer, balanced, structural, semantic, detailed):
    return {"imageId": image_id, "question": question, "answer": answer, "fullAnswer": f"The answer is {answer}.",
            "isBalanced": balanced, "groups": {"global": None, "local": "10c-x"},
            "types": {"structural": structural, "semantic": semantic, "detailed": detailed},
            "entailed": [], "equivalent": [], "annotations": {"question": {}, "answer": {}, "fullAnswer": {}},
            "semantic": [{"operation": "select", "argument": "x", "dependencies": []}], "semanticStr": "select: x"}


def write_gqa(folder: Path) -> None:
    write_json(folder / "train_balanced_questions.json", {
        "02930152": gqa_question("2354786", "Is the sky dark?", "yes", True, "verify", "attr", "verifyAttr"),
        "07333408": gqa_question("2375429", "What is on the white wall?", "pipe", True, "query", "rel", "relS"),
    })
    write_json(folder / "testdev_balanced_questions.json", {
        "20968379": gqa_question("n288870", "Do the shorts have dark color?", "yes", True, "verify", "attr", "verifyAttr"),
        "201640614": gqa_question("n161313", "Who is wearing the dress?", "woman", False, "query", "rel", "relS"),
    })
    for i, stem in enumerate(("2354786", "2375429", "n288870", "n161313")):
        image(folder / "images" / f"{stem}.jpg", i, mode="L" if stem == "n161313" else "RGB")


# ------------------------------------------------------------------------------------------------- VQAv2 (c.6)
def vqa_answers(pairs):
    out = []
    for answer, n in pairs:
        out.extend({"answer": answer, "answer_confidence": "yes", "answer_id": 0} for _ in range(n))
    for i, a in enumerate(out, 1):
        a["answer_id"] = i
    return out


def write_vqav2(folder: Path) -> None:
    header = {"info": {}, "license": {}, "data_type": "mscoco", "task_type": "Open-Ended"}
    train_q = [{"question_id": 9000, "image_id": 9, "question": "How many cats are there?"},
               {"question_id": 9001, "image_id": 9, "question": "Is it sunny?"}]
    train_a = [  # deliberately not in question order: the join is by question_id
        {"question_id": 9001, "image_id": 9, "question_type": "is it", "answer_type": "yes/no",
         "multiple_choice_answer": "yes", "answers": vqa_answers([("yes", 9), ("no", 1)])},
        {"question_id": 9000, "image_id": 9, "question_type": "how many", "answer_type": "number",
         "multiple_choice_answer": "2", "answers": vqa_answers([("2", 8), ("two", 2)])},
    ]
    val_q = [{"question_id": 42000, "image_id": 42, "question": "What color is the bus?"}]
    val_a = [{"question_id": 42000, "image_id": 42, "question_type": "what color", "answer_type": "other",
              "multiple_choice_answer": "red", "answers": vqa_answers([("red", 7), ("maroon", 2), ("red and white", 1)])}]
    for sub, qs, anns in (("train2014", train_q, train_a), ("val2014", val_q, val_a)):
        write_json(folder / f"v2_OpenEnded_mscoco_{sub}_questions.json", {**header, "data_subtype": sub, "questions": qs})
        write_json(folder / f"v2_mscoco_{sub}_annotations.json", {**header, "data_subtype": sub, "annotations": anns})
    image(folder / "train2014" / "COCO_train2014_000000000009.jpg", 0)
    image(folder / "val2014" / "COCO_val2014_000000000042.jpg", 1)


# ------------------------------------------------------------------------------------------------ VizWiz (c.7)
def vizwiz_answers(pairs):
    return [{"answer": a, "answer_confidence": c} for a, n, c in pairs for _ in range(n)]


def write_vizwiz(folder: Path) -> None:
    val = [
        {"image": "VizWiz_val_00000001.jpg", "question": "What is this?", "answerable": 1, "answer_type": "other",
         "answers": vizwiz_answers([("soup", 4, "yes"), ("tomato soup", 4, "yes"), ("can", 2, "maybe")])},
        {"image": "VizWiz_val_00000002.jpg", "question": "What color is this shirt?", "answerable": 0,
         "answer_type": "unanswerable", "answers": vizwiz_answers([("unanswerable", 7, "yes"), ("blue", 3, "maybe")])},
    ]
    test = [{"image": "VizWiz_test_00000001.jpg", "question": "Is it dark?"}]
    write_json(folder / "Annotations" / "val.json", val)
    write_json(folder / "Annotations" / "test.json", test)
    image(folder / "val" / "VizWiz_val_00000001.jpg", 0, mode="CMYK")
    image(folder / "val" / "VizWiz_val_00000002.jpg", 1)
    image(folder / "test" / "VizWiz_test_00000001.jpg", 2)


# ---------------------------------------------------------------------------------------------- TextCaps (c.8)
TEXTCAPS_VAL = {
    "0000cccc0000cccc": ["A sign with the number 7 on it.", "The number seven.", "A white sign.",
                         "A sign reading 7.", "Seven in black."],
    "0000eeee0000eeee": ["A bottle of Coca Cola.", "A coke bottle.", "A red label.", "A soda.", "A drink."],
}


def write_textcaps(folder: Path) -> None:
    rows, cid = [], 0
    for image_id, refs in TEXTCAPS_VAL.items():
        for ref in refs:
            cid += 1
            rows.append({"image_id": image_id, "image_name": image_id, "image_path": f"train/{image_id}.jpg",
                         "image_classes": ["Sign"], "image_width": 6, "image_height": 4, "set_name": "val",
                         "flickr_original_url": "", "flickr_300k_url": "", "caption_id": cid, "caption_str": ref,
                         "caption_tokens": ref.lower().split(), "reference_strs": refs,
                         "reference_tokens": [r.lower().split() for r in refs]})
    # interleave the two images' rows: grouping must not rely on adjacency
    rows = rows[:2] + rows[5:7] + rows[2:5] + rows[7:]
    write_json(folder / "TextCaps_0.1_val.json", {"dataset_type": "val", "dataset_name": "textcaps", "data": rows})
    # no image folder: TextCaps reuses TextVQA's train_images (the loader falls back to the textvqa folder)


# ----------------------------------------------------------------------------------------------- OCR-VQA (c.9)
def write_ocrvqa(folder: Path) -> None:
    data = {
        "761183272": {"imageURL": "http://ecx.images-amazon.com/images/I/61Y5cOdHJbL.jpg", "title": "Mom's Family Wall Calendar",
                      "authorName": "Sandra Boynton", "genre": "Calendars", "split": 3,
                      "questions": ["Who wrote this book?", "What is the genre of this book?"],
                      "answers": ["Sandra Boynton", "Calendars"]},
        "1880418622": {"imageURL": "http://ecx.images-amazon.com/images/I/51abc.jpg", "title": "Road Atlas",
                       "authorName": "Rand McNally", "genre": "Travel", "split": 1,
                       "questions": ["Is this a travel book?"], "answers": ["Yes"]},
        "B00ABC1234": {"imageURL": "http://ecx.images-amazon.com/images/I/41xyz.png", "title": "Python Basics",
                       "authorName": "A. Coder", "genre": "Computers & Technology", "split": 3,
                       "questions": ["What is the title of this book?"], "answers": ["Python Basics"]},
    }
    write_json(folder / "dataset.json", data)
    image(folder / "images" / "761183272.jpg", 0)
    image(folder / "images" / "1880418622.jpg", 1)
    image(folder / "images" / "B00ABC1234.png", 2, mode="P")


# -------------------------------------------------------------------------------------------- Places365 (c.10)
PLACES_TRAIN_COUNTS = {"/a/airfield": 12, "/a/apartment_building/outdoor": 3, "/b/bakery/shop": 7}


def write_places365(folder: Path) -> None:
    write_text(folder / "categories_places365.txt",
               ["/a/airfield 0", "/a/apartment_building/outdoor 1", "/b/bakery/shop 2"])
    lines = []
    for index, (cat, n) in enumerate(PLACES_TRAIN_COUNTS.items()):
        for k in range(1, n + 1):
            rel = f"{cat}/{k:08d}.jpg"
            lines.append(f"{rel} {index}")
            image(folder / "data_256" / rel.lstrip("/"), index)
    write_text(folder / "places365_train_standard.txt", lines)
    val = [("Places365_val_00000001.jpg", 1), ("Places365_val_00000002.jpg", 0), ("Places365_val_00000003.jpg", 2),
           ("Places365_val_00000004.jpg", 0)]
    write_text(folder / "places365_val.txt", [f"{name} {index}" for name, index in val])
    for name, index in val:
        image(folder / "val_256" / name, index)


WRITERS = {name: globals()[f"write_{name}"] for name in DATASETS}


def make_raw_root(root: Path) -> Path:
    root = Path(root)
    for name, writer in WRITERS.items():
        writer(root / name)
    return root
