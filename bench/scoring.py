"""Scoring throughput: VQA soft accuracy (vqa_soft@m4c) and our CIDEr-D vs pycocoevalcap's ``Cider``.

Goals (issue "Scoring"):
1. ``vqa_soft@m4c`` >= 1,000,000 predictions per minute on one process, measured on 1M synthetic predictions
   with 10 human answers each (answers drawn from a Zipf-distributed vocabulary of VQA-style strings with
   case/punctuation/number-word variants, so the m4c normaliser does real work). Samples are built before the
   clock starts; the clock covers ``Metric.score`` calls over chunks of 200k samples (each call has its own
   normalisation memo, so the warm-up of the memo is timed once per chunk).
2. ``cider_d`` >= 5x faster than pycocoevalcap ``Cider.compute_score`` on 20,000 images x 5 references, per-image
   scores equal within 1e-9 (max absolute difference reported). Ours: median of 3 runs; pycocoevalcap: 1 run.

Prints a table and writes bench/results/scoring.json (atomic).

    python bench/scoring.py [--vqa 1000000] [--images 20000]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cvit_bench.files import atomic_write_json  # noqa: E402
from cvit_bench.formats.sample import Sample  # noqa: E402
from cvit_bench.scoring.base import get_metric  # noqa: E402
from cvit_bench.scoring.cider_d import cider_d  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "scoring.json"
CHUNK = 200_000


def _answer_vocab(rng: np.random.Generator, size: int) -> list[str]:
    base = ["yes", "no", "2", "two", "red", "blue", "white", "the cat", "a dog", "Nike", "stop", "10:30",
            "3.5", "dont know", "tennis", "left", "right", "1,000", "U.S.A.", "coca-cola"]
    words = [f"word{i}" for i in range(size)]
    vocab = base + [" ".join(rng.choice(words, size=rng.integers(1, 4))) for _ in range(size - len(base))]
    return vocab


def _variant(rng: np.random.Generator, text: str) -> str:
    r = rng.random()
    if r < 0.2:
        return text.capitalize()
    if r < 0.3:
        return text + "."
    if r < 0.35:
        return "the " + text
    return text


def make_vqa_samples(n: int, seed: int = 0) -> tuple[list[Sample], list[str]]:
    rng = np.random.default_rng(seed)
    vocab = _answer_vocab(rng, 20_000)
    zipf = np.minimum(rng.zipf(1.4, size=(n, 3)) - 1, len(vocab) - 1)
    samples, preds = [], []
    for i in range(n):
        a, b, c = (vocab[j] for j in zipf[i])
        answers = [a] * 6 + [_variant(rng, a), b, b, c]
        samples.append(Sample(uid=f"vqav2/val/{i}", task="vqav2", split="val", source_id=str(i), image=None,
                              question="", instruction="", template_set="single", template_index=0, prompt="",
                              target=a, references=answers))
        r = rng.random()
        preds.append(_variant(rng, a) if r < 0.6 else (b if r < 0.75 else vocab[int(rng.integers(len(vocab)))]))
    return samples, preds


def bench_vqa(n: int) -> dict:
    metric = get_metric("vqa_soft@m4c")
    elapsed = 0.0
    total = 0.0
    for start in range(0, n, CHUNK):
        samples, preds = make_vqa_samples(min(CHUNK, n - start), seed=start)
        t0 = time.perf_counter()
        res = metric.score(samples, preds)
        elapsed += time.perf_counter() - t0
        total += res.value * res.n
        del samples, preds
    return {"predictions": n, "answers_per_prediction": 10, "seconds": elapsed,
            "predictions_per_minute": n / elapsed * 60, "mean_accuracy": total / n, "goal_per_minute": 1_000_000}


def make_captions(n_images: int, n_refs: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(8_000)])

    def sentence() -> str:
        return " ".join(words[np.minimum(rng.zipf(1.3, int(rng.integers(6, 16))) - 1, len(words) - 1)])

    return [sentence() for _ in range(n_images)], [[sentence() for _ in range(n_refs)] for _ in range(n_images)]


def bench_cider(n_images: int, n_refs: int = 5) -> dict:
    from pycocoevalcap.cider.cider import Cider

    cands, refs = make_captions(n_images, n_refs)
    ours_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        ours_value, ours = cider_d(cands, refs)
        ours_times.append(time.perf_counter() - t0)
    gts = {i: refs[i] for i in range(n_images)}
    res = {i: [cands[i]] for i in range(n_images)}
    t0 = time.perf_counter()
    ref_value, ref = Cider().compute_score(gts, res)
    ref_time = time.perf_counter() - t0
    ours_time = statistics.median(ours_times)
    return {"images": n_images, "references_per_image": n_refs, "ours_seconds": ours_time,
            "ours_seconds_all_runs": ours_times, "pycocoevalcap_seconds": ref_time,
            "speedup": ref_time / ours_time, "max_abs_diff_per_image": float(np.max(np.abs(np.asarray(ours) - ref))),
            "abs_diff_corpus": abs(ours_value - float(ref_value)), "corpus_cider": ours_value, "goal_speedup": 5.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vqa", type=int, default=1_000_000, help="number of synthetic VQA predictions")
    ap.add_argument("--images", type=int, default=20_000, help="number of caption images (5 references each)")
    args = ap.parse_args(argv)

    vqa = bench_vqa(args.vqa)
    cid = bench_cider(args.images)
    print(f"{'measure':<42} {'value':>16}  goal")
    print(f"{'vqa_soft@m4c predictions/minute':<42} {vqa['predictions_per_minute']:>16,.0f}  >= 1,000,000")
    print(f"{'vqa_soft@m4c seconds for ' + format(vqa['predictions'], ','):<42} {vqa['seconds']:>16.2f}")
    print(f"{'CIDEr-D ours, seconds (median of 3)':<42} {cid['ours_seconds']:>16.2f}")
    print(f"{'CIDEr-D pycocoevalcap, seconds':<42} {cid['pycocoevalcap_seconds']:>16.2f}")
    print(f"{'CIDEr-D speed-up':<42} {cid['speedup']:>15.1f}x  >= 5x")
    print(f"{'CIDEr-D max |diff| per image':<42} {cid['max_abs_diff_per_image']:>16.2e}  <= 1e-9")
    atomic_write_json(RESULTS, {
        "benchmark": "scoring", "python": platform.python_version(), "machine": platform.machine(),
        "processor": platform.processor(), "vqa_soft": vqa, "cider_d": cid,
    })
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
