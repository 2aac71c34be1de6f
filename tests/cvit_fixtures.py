"""Generated fixtures in the published CVIT file formats (docs/benchmarks/cvit.md, Source files) plus the official annotations.

``make_cvit_files(root, template_set)`` writes a complete, tiny raw root for ``prepare --source cvit-files``:
``Instructions_Single/<Task>/...`` (or ``Instructions_Multi``), ``ScienceQA/problems.json`` and
``pid_splits.json``, ``TextVQA/TextVQA_0.5.1_val.json``, ``GQA/testdev_balanced_questions.json`` and PNG images
under ``images/``. Everything is deterministic.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from cvit_bench.data.templates import load_template_set

FOLDERS = {"scienceqa": "ScienceQA", "textvqa": "TextVQA", "flickr30k": "Flickr30k", "imagenet": "ImageNet",
           "gqa": "GQA", "vqav2": "VQAv2", "vizwiz": "VizWiz", "textcaps": "TextCaps", "ocrvqa": "OCRVQA",
           "places365": "Places365"}
FAMILY = {"scienceqa": 0, "textvqa": 1, "flickr30k": 2, "imagenet": 3, "gqa": 4, "vqav2": 5, "vizwiz": 1,
          "textcaps": 2, "ocrvqa": 1, "places365": 6}
QA_TASKS = {"textvqa", "gqa", "vqav2", "vizwiz", "ocrvqa"}
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (120, 60, 200)]


def _img(root: Path, rel: str, i: int) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        Image.new("RGB", (24 + i % 3 * 8, 24), COLORS[i % len(COLORS)]).save(path)
    return rel


def _instr(template_set: str, task: str, i: int) -> str:
    options = load_template_set(template_set).families[FAMILY[task]]
    return options[i % len(options)]


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def make_cvit_files(root: Path, template_set: str = "single", n: int = 6) -> Path:
    root = Path(root)
    set_dir = root / ("Instructions_Single" if template_set == "single" else "Instructions_Multi")
    # --- ScienceQA: official problems + splits; one text-only problem ---
    problems, test_pids, train_pids = {}, [], []
    for i in range(2 * n):
        pid = str(100 + i)
        split = "test" if i < n else "train"
        problems[pid] = {"question": f"Which color is item {i}?", "choices": ["red", "green", "blue"][: 2 + i % 2],
                         "answer": i % 2, "hint": "" if i % 3 == 0 else f"Item {i} is shown.",
                         "image": None if i == 1 else "image.png", "task": "closed choice", "grade": f"grade{1 + i % 12}",
                         "subject": "natural science", "topic": "colors", "category": "c", "skill": "s",
                         "lecture": "", "solution": "", "split": split}
        (test_pids if split == "test" else train_pids).append(pid)
    _write(root / "ScienceQA" / "problems.json", problems)
    _write(root / "ScienceQA" / "pid_splits.json", {"train": train_pids, "val": [], "test": test_pids})

    def sqa_text(pid, i):
        p = problems[pid]
        ctx = f"Context: {p['hint']}\n" if p["hint"] else ""
        opts = "\n".join(f"{'ABCDE'[k]}. {c}" for k, c in enumerate(p["choices"]))
        return f"{ctx}{p['question']}\n{opts}\n{_instr(template_set, 'scienceqa', i)}"

    sqa_eval = []
    for i, pid in enumerate(test_pids):
        rec = {"question_id": pid, "text": sqa_text(pid, i), "answer": "AB"[problems[pid]["answer"]]}
        if problems[pid]["image"]:
            rec["image"] = _img(root, f"images/scienceqa/test/{pid}/image.png", i)
        sqa_eval.append(rec)
    _write(set_dir / "ScienceQA" / "test.json", sqa_eval)
    sqa_train = []
    for i, pid in enumerate(train_pids):
        rec = {"id": pid, "image": _img(root, f"images/scienceqa/train/{pid}/image.png", i),
               "conversations": [{"from": "human", "value": "<image>\n" + sqa_text(pid, i)},
                                 {"from": "gpt", "value": "AB"[problems[pid]["answer"]]}]}
        sqa_train.append(rec)
    _write(set_dir / "ScienceQA" / "train.json", sqa_train)

    # --- official TextVQA val (10 answers) and GQA testdev-balanced ---
    textvqa_ann = {"dataset_version": "0.5.1", "data": [
        {"question_id": 5000 + i, "question": f"what is written {i}?", "image_id": f"{i:016x}",
         "answers": ["stop"] * 4 + ["stop sign"] * 3 + [f"word{i}"] * 3, "set_name": "val"} for i in range(n)]}
    _write(root / "TextVQA" / "TextVQA_0.5.1_val.json", textvqa_ann)
    gqa_q = {f"2019{i:04d}": {"imageId": f"n{i}", "question": f"what is left {i}?", "answer": "cat" if i % 2 else "no",
                              "fullAnswer": "a cat", "isBalanced": i != 2,
                              "types": {"structural": "query" if i % 2 else "verify", "semantic": "obj", "detailed": "x"}}
             for i in range(n)}
    _write(root / "GQA" / "testdev_balanced_questions.json", gqa_q)

    # --- the other tasks ---
    for task in ("textvqa", "flickr30k", "imagenet", "gqa", "vqav2", "vizwiz", "textcaps", "ocrvqa", "places365"):
        folder = set_dir / FOLDERS[task]
        eval_recs, train_recs = [], []
        for i in range(n):
            image = _img(root, f"images/{task}/{i}.png", i)
            instruction = _instr(template_set, task, i)
            if task in QA_TASKS:
                text = f"What is shown in picture {i}?\n{instruction}"
                answer = {"textvqa": "stop", "gqa": "cat" if i % 2 else "no"}.get(task, f"answer {i}")
            else:
                text = instruction
                answer = {"imagenet": "goldfish", "places365": "airfield"}.get(task, f"a caption number {i} .")
            qid = {"textvqa": 5000 + i, "gqa": f"2019{i:04d}", "vqav2": 262148000 + i, "ocrvqa": f"761183272_{i}"}.get(task, i)
            if task in ("flickr30k", "textcaps"):
                eval_answer = answer if (task == "textcaps" and i == 0) else [answer, f"another caption {i} .", "x y z ."]
            else:
                eval_answer = answer
            eval_recs.append({"question_id": qid, "image": image, "text": text, "answer": eval_answer})
            train_recs.append({"id": f"{task}-{i}", "image": image,
                               "conversations": [{"from": "human", "value": f"<image>\n{text}"},
                                                 {"from": "gpt", "value": answer}]})
        splits = {"textvqa": {"train.json": train_recs, "val.json": eval_recs},
                  "flickr30k": {"train.json": train_recs, "val.json": eval_recs},
                  "imagenet": {"train.json": train_recs, "test.json": eval_recs},
                  "gqa": {"train.json": train_recs, "test.json": eval_recs},
                  "vqav2": {"train.json": train_recs, "val.json": eval_recs},
                  "vizwiz": {"val.json": eval_recs}, "textcaps": {"val.json": eval_recs},
                  "ocrvqa": {"test.json": eval_recs},
                  "places365": {"train_5shot.json": train_recs[:3], "train_10shot.json": train_recs, "val.json": eval_recs}}[task]
        for name, recs in splits.items():
            _write(folder / name, recs)
    return root
