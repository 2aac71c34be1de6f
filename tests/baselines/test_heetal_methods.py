"""Issue 18 (b, c): task similarity, MAS/TIR importance rules, EProj retrieval, and the model families
(InstructBLIP, Qwen2-VL/Qwen2.5-VL, LLaVA) through one backend, trainer and method interface."""
from __future__ import annotations

import json

import pytest
import torch

from cvit_bench.backends.families import family_for_type, pack_padding
from cvit_bench.errors import CvitError
from cvit_bench.baselines.importance import mas_objective, normalise, quadratic_penalty
from cvit_bench.baselines.task_similarity import (TaskEmbedding, new_vs_previous, similarity_matrix,
                                                  tiny_text_encoder)


def _emb(task, img, inst, out):
    unit = lambda v: torch.tensor(v, dtype=torch.float32) / torch.tensor(v, dtype=torch.float32).norm()  # noqa: E731
    return TaskEmbedding(task=task, image=None if img is None else unit(img), instruction=unit(inst),
                         output=unit(out), n=10)


def test_similarity_is_symmetric_with_ones_and_ranks_the_near_duplicate_first():
    a = _emb("a", [1, 0, 0], [1, 0, 0], [1, 0, 0])
    a2 = _emb("a2", [0.95, 0.1, 0], [0.9, 0.1, 0], [1, 0.05, 0])
    b = _emb("b", [0, 1, 0], [0.2, 1, 0], [0, 1, 0.3])
    c = _emb("c", [0, 0, 1], [0, 0.3, 1], [0.2, 0, 1])
    m = similarity_matrix([a, b, a2, c])
    for i in range(4):
        assert m[i][i] == 1.0
        for j in range(4):
            assert m[i][j] == pytest.approx(m[j][i]) and 0.0 <= m[i][j] <= 1.0
    assert max(range(1, 4), key=lambda j: m[0][j]) == 2
    # TIR's vector: standardised over [new; previous] only; a single pair has no spread -> 0.5 per modality
    assert new_vs_previous(a, [b]) == [pytest.approx(0.125)]
    sims = new_vs_previous(a2, [b, a, c])
    assert max(range(3), key=sims.__getitem__) == 1
    # a text-only task: its image modality counts 0.5 for each pair
    t = _emb("t", None, [1, 0, 0], [1, 0, 0])
    assert similarity_matrix([a, t, b])[0][1] < 1.0


def test_tiny_bert_is_built_offline_and_deterministic():
    enc = tiny_text_encoder()
    x = enc.cls(["Answer the question using a single word or phrase.", "What is happening?"])
    assert x.shape == (2, 64)
    tiny_text_encoder.cache_clear()
    assert torch.equal(tiny_text_encoder().cls(["Answer the question using a single word or phrase."]), x[:1])


def test_importance_rules():
    logits = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], requires_grad=True)
    labels = torch.tensor([[-100, -100, 7]])
    # only position 1 predicts the answer token at position 2: 3² + 4²
    assert float(mas_objective(logits, labels).detach()) == 25.0
    n = normalise({"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([4.0])})
    assert float(n["a"].sum() + n["b"].sum()) == pytest.approx(1.0)
    p = quadratic_penalty({"a": torch.tensor([2.0, 1.0])}, {"a": torch.tensor([0.5, 2.0])}, {"a": torch.tensor([1.0, 1.0])})
    assert float(p) == 0.5


def test_tir_keeps_the_max_with_its_owner_and_relaxes_similar_owners():
    from cvit_bench.baselines import make_method
    from cvit_bench.baselines.base import StagePlan

    tir = make_method("tir-mas", {"lora_r": 2})
    tir.combine({"w": torch.tensor([0.5, 0.1, 0.4])}, StagePlan(1, "t1", ("t1",)))
    tir.combine({"w": torch.tensor([0.2, 0.7, 0.1])}, StagePlan(2, "t2", ("t2",)))
    assert torch.equal(tir.importance["w"], torch.tensor([0.5, 0.7, 0.4]))
    assert tir.owner["w"].tolist() == [0, 1, 0] and tir.trained == ["t1", "t2"]

    class Ctx:
        device, stats = torch.device("cpu"), {}

    tir.similarity_to_trained = lambda ctx: [0.9, 0.0]   # the new task resembles t1 only
    eff = tir.effective(Ctx())["w"]
    assert torch.allclose(eff, torch.tensor([0.05, 0.7, 0.04]))
    assert torch.equal(tir.importance["w"], torch.tensor([0.5, 0.7, 0.4]))       # stored Ω unscaled


def test_eproj_keys_retrieve_the_expert_of_the_closest_task():
    from cvit_bench.adapters.moe.architectures.eproj import KeyBank

    keys = KeyBank(3, 4, 2)
    with torch.no_grad():
        keys.img.copy_(torch.eye(3, 4))
        keys.inst.copy_(torch.tensor([[1.0, 0], [0, 1.0], [1.0, 1.0]]))
    q_img = torch.tensor([[0.0, 1.0, 0, 0], [1.0, 0, 0, 0]])
    q_inst = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert keys.scores(q_img, q_inst, 3).argmax(-1).tolist() == [1, 0]
    assert keys.scores(q_img, q_inst, 1).argmax(-1).tolist() == [0, 0]    # only trained experts compete


def test_families_presets_and_errors():
    assert family_for_type("llava").default_preset == "lora"
    assert family_for_type("instructblip").prompt_format == "plain"
    assert family_for_type("qwen2_5_vl").name == family_for_type("qwen2_vl").name == "qwen2-vl"
    with pytest.raises(CvitError, match="supported model types"):
        family_for_type("gpt2")
    with pytest.raises(CvitError, match="lora\\+projector"):
        family_for_type("llava").preset("qformer")


def test_pack_padding_moves_inner_padding_out():
    ids = torch.tensor([[9, 9, 0, 0, 5], [9, 9, 6, 7, 8]])
    mask = torch.tensor([[1, 1, 0, 0, 1], [1, 1, 1, 1, 1]])
    q = torch.tensor([[0, 3, 4], [2, 3, 4]])
    qm = torch.tensor([[0, 1, 1], [1, 1, 1]])
    out = pack_padding({"input_ids": ids, "attention_mask": mask, "qformer_input_ids": q, "qformer_attention_mask": qm})
    assert out["input_ids"].tolist() == [[0, 0, 9, 9, 5], [9, 9, 6, 7, 8]]
    assert out["attention_mask"].tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert out["qformer_input_ids"].tolist() == [[3, 4, 0], [2, 3, 4]]


# ------------------------------------------------------------------------------ backbones end to end
@pytest.fixture(scope="module")
def tiny_instructblip_dir(tmp_path_factory):
    from cvit_bench.mini.tiny_families import build_tiny_instructblip

    return build_tiny_instructblip(tmp_path_factory.mktemp("blip") / "model")


@pytest.fixture(scope="module")
def tiny_qwen25vl_dir(tmp_path_factory):
    from cvit_bench.mini.tiny_families import build_tiny_qwen25vl

    return build_tiny_qwen25vl(tmp_path_factory.mktemp("qwen25") / "model")


@pytest.fixture(scope="module")
def cit_mini(tmp_path_factory):
    from cvit_bench.data.prepare import prepare

    root = tmp_path_factory.mktemp("cit-mini")
    return prepare("cit-mini", templates="single", source="synthetic", raw_root=root / "raw", out=root / "prep",
                   limit_per_split=6, tasks=["mini-color", "mini-mc", "mini-color-b"]).folder


def test_instructblip_batches_equal_single_samples(tiny_instructblip_dir):
    from PIL import Image

    from cvit_bench.backends.base import GenerationRequest, load_backend

    be = load_backend("hf", str(tiny_instructblip_dir), prompt_format="plain")
    reqs = [GenerationRequest(uid=str(i), prompt=t, image="x", max_new_tokens=5)
            for i, t in enumerate(["What is shown?", "Which colour is the big shape here?"])]
    ims = [Image.new("RGB", (40, 30), (200, 0, 0)), Image.new("RGB", (30, 40), (0, 200, 0))]
    assert be.generate(reqs, ims) == be.generate(reqs[:1], ims[:1]) + be.generate(reqs[1:], ims[1:])
    assert be.describe()["model_class"] == "InstructBlipForConditionalGeneration"


@pytest.mark.parametrize("family,methods", [("instructblip", ("tir-mas", "eproj")), ("qwen25vl", ("mas",))])
def test_methods_train_and_evaluate_on_other_backbones(family, methods, request, cit_mini, tmp_path, torch_one_thread):
    from cvit_bench.baselines.trainer import train_run
    from cvit_bench.evaluation.checkpoints import load_run_dir
    from cvit_bench.evaluation.runner import EvalOptions, evaluate

    base = request.getfixturevalue({"instructblip": "tiny_instructblip_dir", "qwen25vl": "tiny_qwen25vl_dir"}[family])
    for method in methods:
        opts = {"eproj": {"key_steps": 20, "key_samples": 6, "routing_samples": 4},
                "tir-mas": {"lora_r": 2, "importance_samples": 2, "similarity_samples": 4}}.get(
            method, {"lora_r": 2, "importance_samples": 2})
        run = tmp_path / method
        train_run(method, base, cit_mini, run, order="mini-color,mini-mc", max_steps_per_task=2, batch_size=3,
                  grad_accum=1, options=opts, fewshot=False)
        meta = json.loads((run / "run.json").read_text())
        assert meta["prompt_format"] == ("plain" if family == "instructblip" else "chat-template")
        cfg = json.loads((run / "stage-01-mini-color/adapter_config.json").read_text())
        if method == "tir-mas":      # InstructBLIP default preset: Q-Former saved per adapter + full-rank projection
            assert cfg["modules_to_save"] == ["qformer"] and cfg["rank_pattern"] == {"^language_projection$": 32}
        res = evaluate(load_run_dir(run), data=cit_mini, out=tmp_path / f"eval-{method}", benchmark="cit-mini",
                       opts=EvalOptions(limit=3, num_workers=0))
        assert res["matrix"]["tasks"] == ["mini-color", "mini-mc"]
        assert res["provenance"]["backend"]["model_class"].startswith(
            "InstructBlip" if family == "instructblip" else "Qwen2_5_VL")
        if method == "eproj":
            assert set(res["routing"]) == {"mini-color", "mini-mc"}


def test_eproj_refuses_qwen_clearly(tiny_qwen25vl_dir, cit_mini, tmp_path):
    from cvit_bench.baselines.trainer import train_run

    with pytest.raises(CvitError, match="eproj supports the llava, instructblip families"):
        train_run("eproj", tiny_qwen25vl_dir, cit_mini, tmp_path / "r", order="mini-color", max_steps_per_task=1,
                  batch_size=2, fewshot=False)
