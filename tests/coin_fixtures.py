"""Generated fixtures in the published CoIN layout (HF ``Zacks-Chen/CoIN``, docs/benchmarks/coin.md, Source files) and the
RefCOCO layout. Everything is deterministic; the instruction phrasings are fixture text of our own.

``make_coin_files(root, variant)`` writes ``Instructions_<Variant>/<Task>/{train,test|val}.json`` for the 8 CoIN
tasks, ``Instructions_Diverse/Multitask/train.json`` when the variant is Diverse, the official annotation files
the scorers need (``ScienceQA/problems.json`` + ``pid_splits.json``, ``TextVQA/TextVQA_0.5.1_val.json``,
``GQA/testdev_balanced_questions.json``) and PNG images under ``images/``. Awkward on purpose: one file mixes
int and str question ids, Grounding images are not square, ScienceQA has a text-only problem.

``make_refcoco(root)`` writes ``refcoco/instances.json`` + ``refcoco/refs(unc).p`` (and ``refcocog`` with
``umd``) and COCO ``coco/train2014`` images with boxes at the edge, degenerate, on wide and tall images.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

from PIL import Image

FOLDERS = {"scienceqa": "ScienceQA", "textvqa": "TextVQA", "imagenet": "ImageNet", "gqa": "GQA", "vizwiz": "VizWiz",
           "grounding": "Grounding", "vqav2": "VQAv2", "ocrvqa": "OCRVQA"}
EVAL_FILE = {"textvqa": "val.json", "vizwiz": "val.json", "vqav2": "val.json"}
VARIANT_DIRS = {"original": "Instructions_Original", "diverse": "Instructions_Diverse", "10type": "Instructions_10Type"}
# Fixture phrasings (not CoIN's): one per task for original/diverse, three for 10type.
PHRASES = {
    "original": {"short": ["Answer the question using a single word or phrase."],
                 "sqa": ["Answer with the option's letter from the given choices directly."],
                 "box": ["Please provide the bounding box coordinate of the region this sentence describes."]},
    "diverse": {"short": ["Express your answer in a single word or a short, descriptive phrase."],
                "sqa": ["Select the correct answer from the given choices and reply with its letter."],
                "box": ["Locate the region the sentence describes and give its box coordinates."]},
    "10type": {"short": ["Summarize your response in a single word or a brief phrase.",
                         "Provide your answer using a single word or a brief phrase.",
                         "Give your answer in the form of a single word or a concise phrase."],
               "sqa": ["Answer with the letter of the correct option.", "Reply with the option's letter only."],
               "box": ["Give the bounding box of the described region.", "Output the box of the region described."]},
}
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (120, 60, 200)]
# Grounding: (image size, gold box in the padded-square frame), wide, tall and square images.
GROUNDING = [((50, 25), "[0.10, 0.35, 0.50, 0.55]"), ((20, 40), "[0.25, 0.00, 0.75, 1.00]"),
             ((30, 30), "[0.67, 0.67, 1.00, 1.00]"), ((64, 48), "[0.20, 0.30, 0.60, 0.70]")]
CLASSES = ["goldfish", "tabby cat", "golden retriever"]


def _img(root: Path, rel: str, i: int, size: tuple[int, int] = (24, 24)) -> str:
    path = root / "images" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        Image.new("RGB", size, COLORS[i % len(COLORS)]).save(path)
    return rel


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def phrase(variant: str, kind: str, i: int) -> str:
    options = PHRASES[variant][kind]
    return options[i % len(options)]


def eval_answer(task: str, i: int) -> str:
    """The eval file's `answer` of sample i (what the rule-based scorers and the judge compare with)."""
    return {"textvqa": "stop", "imagenet": CLASSES[i % len(CLASSES)], "gqa": "cat" if i % 2 else "no",
            "vizwiz": "yes" if i % 2 else "unanswerable", "vqav2": "Yes" if i % 2 else "2",
            "ocrvqa": f"Book Title {i}", "grounding": GROUNDING[i % len(GROUNDING)][1]}[task]


def question_id(task: str, i: int):
    # VQAv2 mixes int and str ids in one file (both must survive: str() join, export restores the type).
    return {"textvqa": 5000 + i, "gqa": f"2019{i:04d}", "vqav2": 262148000 + i if i % 2 else f"{262148000 + i}",
            "ocrvqa": f"761183272_{i}", "grounding": f"ref-{i}", "imagenet": i, "vizwiz": f"VizWiz_val_{i:08d}"}[task]


def make_coin_files(root: Path, variant: str = "original", n: int = 4) -> Path:
    root = Path(root)
    set_dir = root / VARIANT_DIRS[variant]
    multitask = []
    # --- ScienceQA: official problems + splits; problem 1 is text-only ---
    problems, test_pids, train_pids = {}, [], []
    for i in range(2 * n):
        pid = str(100 + i)
        split = "test" if i < n else "train"
        problems[pid] = {"question": f"Which color is item {i}?", "choices": ["red", "green", "blue"][: 2 + i % 2],
                         "answer": i % 2, "hint": "", "image": None if i == 1 else "image.png", "grade": "grade3",
                         "subject": "natural science", "category": "c", "split": split}
        (test_pids if split == "test" else train_pids).append(pid)
    _write(root / "ScienceQA" / "problems.json", problems)
    _write(root / "ScienceQA" / "pid_splits.json", {"train": train_pids, "val": [], "test": test_pids})

    def sqa_text(pid: str, i: int) -> str:
        p = problems[pid]
        opts = "\n".join(f"{'ABCDE'[k]}. {c}" for k, c in enumerate(p["choices"]))
        return f"{p['question']}\n{opts}\n{phrase(variant, 'sqa', i)}"

    sqa_eval, sqa_train = [], []
    for i, pid in enumerate(test_pids):
        rec = {"question_id": pid, "text": sqa_text(pid, i), "answer": "AB"[problems[pid]["answer"]]}
        if problems[pid]["image"]:
            rec["image"] = _img(root, f"ScienceQA/test/{pid}/image.png", i)
            rec["text"] = "<image>\n" + rec["text"]
        sqa_eval.append(rec)
    for i, pid in enumerate(train_pids):
        sqa_train.append({"id": pid, "image": _img(root, f"ScienceQA/train/{pid}/image.png", i),
                          "conversations": [{"from": "human", "value": "<image>\n" + sqa_text(pid, i)},
                                            {"from": "gpt", "value": "AB"[problems[pid]["answer"]]}]})
    _write(set_dir / "ScienceQA" / "test.json", sqa_eval)
    _write(set_dir / "ScienceQA" / "train.json", sqa_train)
    multitask += sqa_train

    # --- official TextVQA val (10 answers) and GQA testdev-balanced ---
    _write(root / "TextVQA" / "TextVQA_0.5.1_val.json", {"dataset_version": "0.5.1", "data": [
        {"question_id": 5000 + i, "question": f"what is written {i}?", "image_id": f"{i:016x}",
         "answers": ["stop"] * 4 + ["stop sign"] * 3 + [f"word{i}"] * 3, "set_name": "val"} for i in range(n)]})
    _write(root / "GQA" / "testdev_balanced_questions.json", {
        f"2019{i:04d}": {"imageId": f"n{i}", "question": f"what is left {i}?", "answer": eval_answer("gqa", i),
                         "isBalanced": i != 2, "types": {"structural": "query" if i % 2 else "verify", "semantic": "obj"}}
        for i in range(n)})

    for task in ("textvqa", "imagenet", "gqa", "vizwiz", "grounding", "vqav2", "ocrvqa"):
        kind = "box" if task == "grounding" else "short"
        eval_recs, train_recs = [], []
        for i in range(n):
            size = GROUNDING[i % len(GROUNDING)][0] if task == "grounding" else (24, 24)
            image = _img(root, f"{task}/{i}.png", i, size)
            question = (f"the {['red', 'green', 'blue', 'yellow'][i % 4]} thing on the left" if task == "grounding"
                        else "What is the object in the image?" if task == "imagenet" else f"What is shown in picture {i}?")
            text = f"{question}\n{phrase(variant, kind, i)}"
            rec = {"question_id": question_id(task, i), "image": image, "text": text, "answer": eval_answer(task, i)}
            if task == "grounding":
                rec["answer_bbox"] = eval_answer(task, i)
                rec["size"] = list(size)
            eval_recs.append(rec)
            train_recs.append({"id": f"{task}-train-{i}", "image": image,
                               "conversations": [{"from": "human", "value": f"<image>\n{text}"},
                                                 {"from": "gpt", "value": eval_answer(task, i)}]})
        _write(set_dir / FOLDERS[task] / EVAL_FILE.get(task, "test.json"), eval_recs)
        _write(set_dir / FOLDERS[task] / "train.json", train_recs)
        multitask += train_recs
    if variant == "diverse":
        _write(set_dir / "Multitask" / "train.json", multitask)
    return root


# --- RefCOCO ---------------------------------------------------------------------------------------------

# (image id, (W, H)), then refs: (ref id, ann id, image id, split, COCO bbox, expected box text or None).
REF_IMAGES = [(1, (50, 25)), (2, (20, 40)), (3, (30, 30))]
REF_ANNS = [
    (11, 1, [5, 5, 20, 10], "[0.10, 0.35, 0.50, 0.55]"),       # wide image: y shifted by (50 - 25) / 2
    (12, 2, [0, 0, 20, 40], "[0.25, 0.00, 0.75, 1.00]"),       # tall image, whole image: x shifted by 10
    (13, 3, [20, 20, 15, 15], "[0.67, 0.67, 1.00, 1.00]"),     # reaches past the edge: clipped to 30 x 30
    (14, 3, [5, 5, 0, 10], None),                              # degenerate: no width
]


def make_refcoco(root: Path, *, hostile: bool = False) -> Path:
    """``root/refcoco``, ``root/refcoco+`` (unc) and ``root/refcocog`` (umd) with ``instances.json`` and the refs pickle, plus
    ``root/coco/train2014`` images. Each ann has one ref with two sentences (val) and one more ref (train)."""
    root = Path(root)
    for name, split_by, offset in (("refcoco", "unc", 0), ("refcoco+", "unc", 50), ("refcocog", "umd", 100)):
        folder = root / name
        images = [{"id": iid, "file_name": f"COCO_train2014_{iid:012d}.jpg", "width": w, "height": h}
                  for iid, (w, h) in REF_IMAGES]
        anns = [{"id": aid, "image_id": iid, "category_id": 1, "bbox": bbox, "area": bbox[2] * bbox[3],
                 "segmentation": []} for aid, iid, bbox, _ in REF_ANNS]
        _write(folder / "instances.json", {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]})
        refs = []
        for k, (aid, iid, _, _) in enumerate(REF_ANNS):
            for split in ("val", "train"):
                base = offset + 10 * k + (0 if split == "val" else 5)
                refs.append({"ref_id": base, "ann_id": aid, "image_id": iid, "category_id": 1, "split": split,
                             "file_name": "IGNORED_wrong_name.jpg", "sent_ids": [base, base + 1],
                             "sentences": [{"sent_id": base, "sent": f"thing {k} left", "raw": "x", "tokens": []},
                                           {"sent_id": base + 1, "sent": f"the thing {k}", "raw": "x", "tokens": []}]})
        with open(folder / f"refs({split_by}).p", "wb") as f:
            pickle.dump(refs, f, protocol=2)
    for iid, (w, h) in REF_IMAGES:
        path = root / "coco" / "train2014" / f"COCO_train2014_{iid:012d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), COLORS[iid % len(COLORS)]).save(path)
    return root


class Hostile:
    """Unpickling this runs a shell command (what a poisoned refs file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def write_hostile_pickle(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump([{"ref_id": 1, "split": "val", "payload": Hostile(marker)}], f, protocol=2)
