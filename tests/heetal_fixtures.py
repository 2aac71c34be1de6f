"""Generated fixtures for He et al.'s extra datasets in their official raw layouts (OK-VQA, A-OKVQA).

``write_okvqa(folder)`` writes OK-VQA v1.1 questions/annotations (VQA format, 10 answers) for train2014 and
val2014 with COCO images inside the folder; ``write_aokvqa(folder)`` writes A-OKVQA v1.0 train/val/test JSON
arrays, its COCO 2017 images in ``<raw-root>/coco`` (the loader's fallback folder).
"""
from __future__ import annotations

from pathlib import Path

from raw_fixtures import image, vqa_answers, write_json


def write_okvqa(folder: Path) -> None:
    header = {"info": {}, "license": {}, "data_type": "mscoco"}
    train_q = [{"question_id": 5001, "image_id": 51, "question": "What sport can you use this for?"},
               {"question_id": 5002, "image_id": 52, "question": "What is the man holding?"}]
    train_a = [{"question_id": 5002, "image_id": 52, "question_type": "other", "answer_type": "other",
                "answers": vqa_answers([("umbrella", 6), ("parasol", 4)])},
               {"question_id": 5001, "image_id": 51, "question_type": "other", "answer_type": "other",
                "answers": vqa_answers([("race", 4), ("racing", 6)])}]
    val_q = [{"question_id": 7001, "image_id": 71, "question": "What country is this dish from?"}]
    val_a = [{"question_id": 7001, "image_id": 71, "question_type": "other", "answer_type": "other",
              "answers": vqa_answers([("italy", 8), ("italian", 2)])}]
    for sub, qs, anns in (("train2014", train_q, train_a), ("val2014", val_q, val_a)):
        write_json(folder / f"OpenEnded_mscoco_{sub}_questions.json", {**header, "data_subtype": sub, "questions": qs})
        write_json(folder / f"mscoco_{sub}_annotations.json", {**header, "data_subtype": sub, "annotations": anns})
        for q in qs:
            image(folder / sub / f"COCO_{sub}_{q['image_id']:012d}.jpg", q["image_id"])


def aokvqa_record(qid: str, image_id: int, question: str, choices: list[str], correct: int | None) -> dict:
    rec = {"split": "", "image_id": image_id, "question_id": qid, "question": question, "choices": choices,
           "direct_answers": [choices[correct or 0]] * 10, "difficult_direct_answer": False,
           "rationales": ["Because it is."]}
    if correct is not None:
        rec["correct_choice_idx"] = correct
    return rec


def write_aokvqa(folder: Path, coco: Path) -> None:
    train = [aokvqa_record("22MexNkBPpdZGX6sxbxVBH", 299207, "What is the man by the bags awaiting?",
                           ["skateboarder", "train", "delivery", "cab"], 3),
             aokvqa_record("2232l5d6j6mZkAGuvXeU8F", 101, "Where is the dog sitting?",
                           ["sofa", "car", "grass", "bed"], 2)]
    val = [aokvqa_record("3FB3Vf2yTQZZTbSoYCKWnf", 461751, "What is the purpose of the round thing?",
                         ["decoration", "clock", "light", "sign"], 1)]
    test = [aokvqa_record("00Ra2Rn9TfwQrCM4y5hJtR", 300, "What will happen next?", ["a", "b", "c", "d"], None)]
    for split, recs in (("train", train), ("val", val), ("test", test)):
        for r in recs:
            r["split"] = split
            image(coco / f"{split}2017" / f"{r['image_id']:012d}.jpg", r["image_id"])
        write_json(folder / f"aokvqa_v1p0_{split}.json", recs)


def make_heetal_raw_root(root: Path) -> Path:
    """OK-VQA, A-OKVQA (images under ``coco/``), plus the CVIT raw datasets of :mod:`raw_fixtures`."""
    from raw_fixtures import make_raw_root

    root = make_raw_root(Path(root))
    write_okvqa(root / "okvqa")
    write_aokvqa(root / "aokvqa", root / "coco")
    return root
