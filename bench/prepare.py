"""Prepare throughput: rows/s for a generated 100k-question VQA-style CVIT eval file (images referenced), and
(case `raw-vqav2`) for official raw VQAv2 questions + annotations JSON of 200k questions (`--source raw`).

Goal (foundation issue): >= 5,000 rows/s on 2 cores, i.e. 100k in <= 20 s. The measured time covers the whole
`prepare` call: JSON parsing, sample construction, template matching, image existence checks, parquet writing,
hashing and the manifest. Writes bench/results/prepare.json.

    python bench/prepare.py [--rows 100000]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cvit_bench.files import atomic_write_json  # noqa: E402
from cvit_bench.data.prepare import prepare  # noqa: E402

INSTRUCTION = "Answer the question using a single word or phrase."


def make_vqa_eval(root: Path, rows: int, n_images: int = 2000) -> None:
    img_dir = root / "images" / "vqa"
    img_dir.mkdir(parents=True)
    for i in range(n_images):
        Image.new("RGB", (8, 8), (i % 255, 0, 0)).save(img_dir / f"{i}.png")
    recs = [{"question_id": 262148000 + i, "image": f"images/vqa/{i % n_images}.png",
             "text": f"What is the color of object number {i} in the scene?\n{INSTRUCTION}", "answer": "red"}
            for i in range(rows)]
    folder = root / "Instructions_Single" / "VQAv2"
    folder.mkdir(parents=True)
    (folder / "val.json").write_text(json.dumps(recs))
    (folder / "train.json").write_text("[]")


def make_raw_vqav2(root: Path, questions: int, n_images: int = 200) -> Path:
    """Official VQAv2 layout (questions + annotations JSON, COCO image names) for ``--source raw``.

    ``n_images`` real image files, each asked ``questions / n_images`` questions (question_id = image_id * 1000
    + k, the observed convention), so prepare's image-existence check runs on every sample. Returns a copy of
    the cvit YAML whose vqav2 ``test`` split takes all of ``val2014`` (the packaged YAML draws a 5,000 subset).
    """
    import yaml

    folder = root / "vqav2"
    for img in range(1, n_images + 1):
        path = folder / "val2014" / f"COCO_val2014_{img:012d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (img % 255, 0, 0)).save(path)
    per_image = -(-questions // n_images)
    qs, anns = [], []
    for i in range(questions):
        img, k = 1 + i // per_image, i % per_image
        qid = img * 1000 + k
        qs.append({"question_id": qid, "image_id": img, "question": f"What is the color of object {k} in the scene?"})
        anns.append({"question_id": qid, "image_id": img, "question_type": "what color", "answer_type": "other",
                     "multiple_choice_answer": "red",
                     "answers": [{"answer": "red" if j < 7 else "maroon", "answer_confidence": "yes", "answer_id": j + 1}
                                 for j in range(10)]})
    header = {"info": {}, "license": {}, "data_type": "mscoco", "data_subtype": "val2014"}
    (folder / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({**header, "questions": qs}))
    (folder / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({**header, "annotations": anns}))
    spec = yaml.safe_load((Path(__file__).resolve().parent.parent / "tasks" / "benchmarks" / "cvit.yaml").read_text())
    spec["tasks"]["vqav2"]["raw"] = {"splits": {"test": {"official": "val2014"}}}
    bench_yaml = root / "cvit-raw-bench.yaml"
    bench_yaml.write_text(yaml.safe_dump(spec))
    return bench_yaml


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--raw-questions", type=int, default=200_000)
    args = ap.parse_args()
    results = {"machine": platform.platform(), "python": platform.python_version(), "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "raw"
        make_vqa_eval(root, args.rows)
        t0 = time.perf_counter()
        res = prepare("cvit", templates="single", source="cvit-files", raw_root=root, out=Path(tmp) / "out", tasks=["vqav2"])
        dt = time.perf_counter() - t0
        rows = res.manifest["files"]["vqav2/test.parquet"]["rows"]
        assert rows == args.rows
        results["cases"]["cvit-files-vqa-eval"] = {"rows": rows, "seconds": round(dt, 3), "rows_per_s": round(rows / dt)}
        print(f"cvit-files VQA eval: {rows} rows in {dt:.2f} s = {rows / dt:,.0f} rows/s (goal >= 5,000)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "raw"
        bench_yaml = make_raw_vqav2(root, args.raw_questions)
        c0, t0 = time.process_time(), time.perf_counter()
        res = prepare(str(bench_yaml), templates="five", source="raw", raw_root=root, out=Path(tmp) / "out", tasks=["vqav2"])
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows = res.manifest["files"]["vqav2/test.parquet"]["rows"]
        assert rows == args.raw_questions
        # CPU seconds too: on a shared machine wall time includes other processes' load
        results["cases"]["raw-vqav2"] = {"rows": rows, "seconds": round(dt, 3), "rows_per_s": round(rows / dt),
                                         "cpu_seconds": round(cpu, 3), "rows_per_cpu_s": round(rows / cpu)}
        print(f"raw VQAv2 (questions + annotations): {rows} rows in {dt:.2f} s = {rows / dt:,.0f} rows/s "
              f"({rows / cpu:,.0f} rows per CPU second)")
    out = Path(__file__).parent / "results" / "prepare.json"
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing.setdefault("cases", {}).update(results["cases"])
    existing.update({k: v for k, v in results.items() if k != "cases"})
    atomic_write_json(out, existing)


if __name__ == "__main__":
    main()
