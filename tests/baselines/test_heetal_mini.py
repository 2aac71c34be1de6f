"""Issue 18 (d): He et al.'s headline, qualitatively, on cit-mini with the shipped cvit-mini base.

Order ``near-duplicate`` (mini-color → mini-mc → mini-color-b; current-next schedule), docs/benchmarks/mini.md's recipe at 200 steps per task
(``bench/heetal_mini.py`` ``HE_MINI_TRAINING``), seed 0, one thread. Forgetting = mean over the first two tasks of
(score right after learning it − final score). SeqLoRA forgets mini-mc when mini-color-b brings the colour-word
format back; replay and EProj (one projector per task, routed by learned keys) do not; MAS nearly removes the
forgetting and TIR+MAS (MAS with owner-relative relaxation: mini-color-b may reuse what mini-color owns) does
no worse. Thresholds and their margins, measured with ``bench/heetal_mini.py`` over seeds 0 and 1 and the
default, AVX2 and AVX-512 kernel sets (docs/methods.md, Qualitative reproduction, ``bench/results/heetal_mini.json``).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "heetal_mini.py"
ORDER = "mini-color,mini-mc,mini-color-b"
# A TIR+MAS run may forget up to this many points more than MAS: both sit near zero forgetting on this order
# (measured MAS − TIR+MAS from 0.5 to 2 points), and one mini-mc test sample moves the mean by 0.5.
TIR_TOLERANCE = 2.0


def _bench():
    spec = importlib.util.spec_from_file_location("heetal_mini", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def outcome(mini_base_dir, tmp_path_factory, torch_one_thread):
    bench = _bench()
    return bench.run_order(ORDER, 0, tmp_path_factory.mktemp("heetal-mini"), str(mini_base_dir),
                           bench.HE_MINI_TRAINING["max_steps_per_task"], list(bench.METHODS))


@pytest.mark.slow
def test_sequential_lora_forgets(outcome):
    assert outcome["seq-lora"]["forgetting"] >= 15.0, outcome["seq-lora"]["matrix"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["replay", "eproj"])
def test_replay_and_eproj_forget_less_than_sequential(outcome, method):
    assert outcome[method]["forgetting"] <= outcome["seq-lora"]["forgetting"] - 15.0, outcome[method]["matrix"]


@pytest.mark.slow
def test_tir_mas_forgets_no_more_than_mas(outcome):
    assert outcome["mas"]["forgetting"] <= outcome["seq-lora"]["forgetting"] - 15.0, "MAS must regularise at all"
    assert outcome["tir-mas"]["forgetting"] <= outcome["mas"]["forgetting"] + TIR_TOLERANCE


def test_similarity_ranks_the_near_duplicate_task_highest(tiny_llava_dir, tmp_path, torch_one_thread):
    from cvit_bench.baselines.trainer import train_run
    from cvit_bench.data.prepare import prepare
    from cvit_bench.formats.similarity import FILE_NAME, read_similarity

    data = prepare("cit-mini", templates="single", source="synthetic", raw_root=tmp_path / "raw", out=tmp_path / "p",
                   limit_per_split=40, tasks=["mini-color", "mini-mc", "mini-color-b"]).folder
    run = tmp_path / "tir"
    train_run("tir-mas", tiny_llava_dir, data, run, order="near-duplicate", max_steps_per_task=1, batch_size=8,
              grad_accum=1, options={"lora_r": 2, "importance_samples": 4, "similarity_samples": 40}, fewshot=False)
    sim = read_similarity(run / "stage-03-mini-color-b" / FILE_NAME)
    m = np.array(sim["matrix"])
    assert sim["tasks"] == ["mini-color", "mini-mc", "mini-color-b"]
    assert np.allclose(m, m.T) and np.allclose(np.diag(m), 1.0)
    color, mc, color_b = 0, 1, 2
    assert m[color_b, color] > m[color_b, mc] + 0.1 and m[color, color_b] > m[color, mc] + 0.1
