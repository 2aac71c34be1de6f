"""The hf backend on tiny offline models: batch invariance, adapter hot swap, adapter errors, Qwen2-VL."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cvit_bench.backends.base import BACKENDS, Backend, GenerationRequest, load_backend
from cvit_bench.backends.hf import HFBackend, clean_output
from cvit_bench.errors import CvitError, UnknownNameError
from cvit_bench.mini.tiny import build_tiny_llava, make_lora_adapter


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((20 + 9 * i, 50 - 4 * i, 3)) * 255).astype(np.uint8)) for i in range(n)]


def _mixed_batch(n=8):
    """Prompts of different lengths, a text-only request every third slot, a different budget per request."""
    reqs, imgs = [], []
    for i, im in enumerate(_images(n)):
        text_only = i % 3 == 0
        reqs.append(GenerationRequest(f"t/test/{i}", "What is " + "the red dog " * i + "?",
                                      None if text_only else f"img{i}.png", max_new_tokens=3 + 2 * i))
        imgs.append(None if text_only else im)
    return reqs, imgs


@pytest.fixture(scope="module")
def adapters(tiny_llava_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        "lora1": make_lora_adapter(tiny_llava_dir, root / "lora1", seed=1, scale=2.0),
        "lora2": make_lora_adapter(tiny_llava_dir, root / "lora2", seed=2, scale=2.0),
        "dora": make_lora_adapter(tiny_llava_dir, root / "dora", seed=3, scale=2.0, use_dora=True),
    }


@pytest.fixture(scope="module")
def wrong_base_adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("other-base")
    other = build_tiny_llava(root / "base96", seed=1, text_hidden=96)
    return make_lora_adapter(other, root / "adapter", seed=4)


def _load(path, **kw):
    return HFBackend.load(str(path), device="cpu", **kw)


def _has_tuner_layers(model) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


# --------------------------------------------------------------------------- generation


def test_batch_of_8_equals_one_by_one_with_mixed_lengths_text_only_and_budgets(tiny_llava_dir):
    backend = _load(tiny_llava_dir)
    reqs, imgs = _mixed_batch()
    batched = backend.generate(reqs, imgs)
    single = [backend.generate([r], [im])[0] for r, im in zip(reqs, imgs)]
    assert batched == single
    assert len(set(batched)) > 4  # the rows really differ, so the comparison means something


def test_batch_composition_does_not_change_a_request(tiny_llava_dir):
    backend = _load(tiny_llava_dir)
    reqs, imgs = _mixed_batch()
    alone = backend.generate(reqs[1:2], imgs[1:2])
    short_budget = GenerationRequest(reqs[1].uid, reqs[1].prompt, reqs[1].image, max_new_tokens=2)
    with_others = backend.generate([reqs[5], short_budget, reqs[0]], [imgs[5], imgs[1], imgs[0]])
    assert with_others[1] == backend.generate([short_budget], [imgs[1]])[0]
    assert backend.generate([reqs[5], reqs[1]], [imgs[5], imgs[1]])[1] == alone[0]


def test_image_changes_the_answer_and_wrong_arguments_are_rejected(tiny_llava_dir):
    backend = _load(tiny_llava_dir)
    req = GenerationRequest("u", "Describe it.", "x.png", 6)
    outs = {backend.generate([req], [im])[0] for im in _images(4, seed=5)}
    assert len(outs) > 1
    with pytest.raises(ValueError, match="2 requests but 1 images"):
        backend.generate([req, req], [None])
    with pytest.raises(TypeError, match="PIL image"):
        backend.generate([req], ["x.png"])
    assert backend.generate([], []) == []


def test_clean_output_rule():
    assert clean_output("  a cat </s> ") == "a cat"
    assert clean_output("\nB</s>") == "B"
    assert clean_output("</s> x") == "</s> x"


def test_registry_load_describe_and_cpu_batch_size(tiny_llava_dir):
    backend = load_backend("hf", str(tiny_llava_dir), device="cpu")
    assert "hf" in BACKENDS and isinstance(backend, Backend)
    d = backend.describe()
    assert d["model"] == str(tiny_llava_dir) and d["dtype"] == "float32" and d["device"] == "cpu"
    assert d["processor_class"] == "LlavaProcessor" and d["prompt_format"]["name"] == "vicuna_v1"
    assert d["padding_side"] == "left"
    assert backend.auto_batch_size(*_mixed_batch(2)) == 8
    assert _load(tiny_llava_dir, dtype="bfloat16").describe()["dtype"] == "bfloat16"
    with pytest.raises(UnknownNameError, match="float16"):
        _load(tiny_llava_dir, dtype="fp8")
    with pytest.raises(CvitError, match="cannot load the model config"):
        _load(tiny_llava_dir.parent / "no-such-model")


# --------------------------------------------------------------------------- adapters


def test_hot_swap_equals_a_fresh_load_of_each_adapter(tiny_llava_dir, adapters):
    reqs, imgs = _mixed_batch()
    backend = _load(tiny_llava_dir)
    base = backend.generate(reqs, imgs)
    model_before = backend.model.get_base_model() if hasattr(backend.model, "get_base_model") else backend.model
    for name, path in adapters.items():
        backend.add_adapter(name, path)
    swapped = {}
    for name in ["lora1", "dora", "lora2", "lora1"]:  # switch back and forth, never reloading the base
        backend.activate(name)
        swapped[name] = backend.generate(reqs, imgs)
    assert backend.model.get_base_model() is model_before
    backend.activate(None)
    assert backend.generate(reqs, imgs) == base

    for name, path in adapters.items():
        fresh = _load(tiny_llava_dir)
        fresh.add_adapter(name, path)
        fresh.activate(name)
        assert swapped[name] == fresh.generate(reqs, imgs), name
        assert swapped[name] != base, f"{name} does not change the outputs: the test would be vacuous"
    assert swapped["lora1"] != swapped["lora2"] != swapped["dora"]


def test_adding_an_adapter_keeps_the_active_one(tiny_llava_dir, adapters):
    reqs, imgs = _mixed_batch(4)
    backend = _load(tiny_llava_dir)
    base = backend.generate(reqs, imgs)
    backend.add_adapter("lora1", adapters["lora1"])
    assert backend.generate(reqs, imgs) == base  # loaded, not active yet
    backend.activate("lora1")
    out1 = backend.generate(reqs, imgs)
    backend.add_adapter("dora", adapters["dora"])
    assert backend.generate(reqs, imgs) == out1


def test_remove_adapter(tiny_llava_dir, adapters):
    reqs, imgs = _mixed_batch(4)
    backend = _load(tiny_llava_dir)
    base = backend.generate(reqs, imgs)
    backend.add_adapter("a", adapters["lora1"])
    backend.add_adapter("b", adapters["lora2"])
    backend.activate("b")
    out_b = backend.generate(reqs, imgs)
    backend.remove_adapter("a")
    assert backend.generate(reqs, imgs) == out_b
    backend.remove_adapter("b")
    assert backend.active is None and not _has_tuner_layers(backend.model)
    assert backend.generate(reqs, imgs) == base
    with pytest.raises(UnknownNameError, match="adapter 'b'"):
        backend.activate("b")
    backend.add_adapter("b", adapters["lora2"])  # loading again after a full unload works
    backend.activate("b")
    assert backend.generate(reqs, imgs) == out_b


def test_adapter_for_another_base_is_refused_and_leaves_the_base_intact(tiny_llava_dir, adapters,
                                                                         wrong_base_adapter):
    reqs, imgs = _mixed_batch(4)
    backend = _load(tiny_llava_dir)
    base = backend.generate(reqs, imgs)
    with pytest.raises(CvitError) as e:  # as the first adapter
        backend.add_adapter("w", wrong_base_adapter)
    assert str(wrong_base_adapter) in str(e.value) and str(tiny_llava_dir) in str(e.value)
    assert "size mismatch" in str(e.value)
    assert not _has_tuner_layers(backend.model) and backend.adapters == {}
    assert backend.generate(reqs, imgs) == base

    backend.add_adapter("ok", adapters["lora1"])
    backend.activate("ok")
    ok = backend.generate(reqs, imgs)
    with pytest.raises(CvitError, match="does not fit the base model"):  # as a later adapter
        backend.add_adapter("w", wrong_base_adapter)
    assert list(backend.adapters) == ["ok"] and len(backend.model.peft_config) == 1 and backend.active == "ok"
    assert backend.generate(reqs, imgs) == ok


def test_adapter_with_module_names_the_base_lacks(tiny_llava_dir, tiny_qwen2vl_dir, adapters, tmp_path):
    # target modules that do not exist in LLaVA (Qwen2-VL's fused vision qkv)
    qwen_vis = make_lora_adapter(tiny_qwen2vl_dir, tmp_path / "qwen-vis", seed=1, target=r".*visual.*qkv")
    backend = _load(tiny_llava_dir)
    with pytest.raises(CvitError, match="not found in the base model") as e:
        backend.add_adapter("q", qwen_vis)
    assert str(qwen_vis) in str(e.value)
    assert not _has_tuner_layers(backend.model)

    # config fits, but the weights file names modules of a deeper model (layer 7 of a 2-layer base)
    from safetensors.torch import load_file, save_file

    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "adapter_config.json").write_text((adapters["lora1"] / "adapter_config.json").read_text())
    weights = load_file(adapters["lora1"] / "adapter_model.safetensors")
    save_file({k.replace("layers.1.", "layers.7."): v for k, v in weights.items()},
              renamed / "adapter_model.safetensors")
    with pytest.raises(CvitError, match="match no module of the base") as e:
        backend.add_adapter("r", renamed)  # "r" is inside peft's "lora_" prefix: the backend must cope
    assert str(renamed) in str(e.value) and backend.adapters == {}
    assert not _has_tuner_layers(backend.model)


def test_folder_that_is_not_an_adapter(tiny_llava_dir, adapters, tmp_path):
    backend = _load(tiny_llava_dir)
    with pytest.raises(CvitError, match="not a PEFT adapter folder") as e:
        backend.add_adapter("m", tiny_llava_dir)  # a model folder, not an adapter
    assert str(tiny_llava_dir) in str(e.value)
    no_weights = tmp_path / "config-only"
    no_weights.mkdir()
    (no_weights / "adapter_config.json").write_text((adapters["lora1"] / "adapter_config.json").read_text())
    with pytest.raises(CvitError, match="adapter_model.safetensors"):
        backend.add_adapter("c", no_weights)
    bad_cfg = tmp_path / "bad-config"
    bad_cfg.mkdir()
    (bad_cfg / "adapter_config.json").write_text("{not json")
    (bad_cfg / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(CvitError, match="not a valid PEFT config"):
        backend.add_adapter("b", bad_cfg)
    backend.add_adapter("a", adapters["lora1"])
    with pytest.raises(CvitError, match="already loaded"):
        backend.add_adapter("a", adapters["lora2"])


def test_other_adapter_types_load_and_cannot_mix_with_lora(tiny_llava_dir, adapters, tmp_path):
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForImageTextToText

    ia3 = get_peft_model(AutoModelForImageTextToText.from_pretrained(tiny_llava_dir), IA3Config(
        target_modules=r".*language_model.*\.(k_proj|v_proj|down_proj)",
        feedforward_modules=r".*language_model.*\.down_proj"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in ia3.named_parameters():
            if "ia3_l" in name:
                p.copy_(1.0 + torch.randn(p.shape, generator=gen))
    ia3.save_pretrained(tmp_path / "ia3")

    reqs, imgs = _mixed_batch(4)
    backend = _load(tiny_llava_dir)
    base = backend.generate(reqs, imgs)
    backend.add_adapter("ia3", tmp_path / "ia3")
    backend.activate("ia3")
    tuned = backend.generate(reqs, imgs)
    assert tuned != base
    with pytest.raises(CvitError, match="LORA adapter cannot be loaded next to the IA3 adapters"):
        backend.add_adapter("lora", adapters["lora1"])
    assert backend.generate(reqs, imgs) == tuned
    backend.remove_adapter("ia3")
    assert backend.generate(reqs, imgs) == base


# --------------------------------------------------------------------------- Qwen2-VL


def test_qwen2vl_generate_batch_invariance_and_adapter(tiny_qwen2vl_dir, tmp_path):
    backend = _load(tiny_qwen2vl_dir, prompt_format="chat-template")
    assert backend.describe()["processor_class"] == "Qwen2VLImageOnlyProcessor"
    reqs, imgs = _mixed_batch(6)
    base = backend.generate(reqs, imgs)
    assert base == [backend.generate([r], [im])[0] for r, im in zip(reqs, imgs)]
    assert len(set(base)) > 2
    lora = make_lora_adapter(tiny_qwen2vl_dir, tmp_path / "qlora", seed=7, scale=2.0)
    backend.add_adapter("q", lora)
    backend.activate("q")
    tuned = backend.generate(reqs, imgs)
    assert tuned != base
    fresh = _load(tiny_qwen2vl_dir, prompt_format="chat-template")
    fresh.add_adapter("q", lora)
    fresh.activate("q")
    assert fresh.generate(reqs, imgs) == tuned
    backend.activate(None)
    assert backend.generate(reqs, imgs) == base


# --------------------------------------------------------------------------- tiny builders


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_tiny_llava_is_deterministic_and_has_16_image_tokens(tiny_llava_dir, tmp_path):
    again = build_tiny_llava(tmp_path / "again", seed=0)
    assert _digest(again) == _digest(tiny_llava_dir)
    other = build_tiny_llava(tmp_path / "other", seed=1)
    assert _digest(other)["model.safetensors"] != _digest(tiny_llava_dir)["model.safetensors"]
    assert _digest(other)["tokenizer.json"] == _digest(tiny_llava_dir)["tokenizer.json"]
    cfg = json.loads((tiny_llava_dir / "config.json").read_text())
    assert cfg["image_seq_length"] == 16 and cfg["vision_feature_layer"] == -2
    backend = _load(tiny_llava_dir)
    enc = backend.encode([GenerationRequest("u", "Q", "x", 1)], _images(1))
    assert int((enc["input_ids"] == cfg["image_token_index"]).sum()) == 16


def test_lora_adapter_is_deterministic_and_stays_off_the_vision_tower(tiny_llava_dir, adapters, tmp_path):
    from safetensors.torch import load_file

    again = make_lora_adapter(tiny_llava_dir, tmp_path / "again", seed=1, scale=2.0)
    assert _digest(again)["adapter_model.safetensors"] == _digest(adapters["lora1"])["adapter_model.safetensors"]
    keys = list(load_file(adapters["lora1"] / "adapter_model.safetensors"))
    assert keys and all("language_model" in k for k in keys)
    assert all(float(v.abs().sum()) > 0 for v in load_file(adapters["lora1"] / "adapter_model.safetensors").values())
    dora_keys = load_file(adapters["dora"] / "adapter_model.safetensors")
    assert any("magnitude" in k for k in dora_keys)


def test_llava7b_shaped_config_has_real_shapes_without_building_weights():
    from transformers import LlavaForConditionalGeneration

    from cvit_bench.mini.tiny import tiny_llava_parts

    cfg, proc = tiny_llava_parts(llava7b_shaped=True)
    with torch.device("meta"):
        n_params = sum(p.numel() for p in LlavaForConditionalGeneration(cfg).parameters())
    assert 7.0e9 < n_params < 7.1e9
    enc = proc(images=_images(1), text=["USER: <image>\nQ ASSISTANT:"], return_tensors="pt")
    assert int((enc["input_ids"] == cfg.image_token_index).sum()) == 576
    assert tuple(enc["pixel_values"].shape[-2:]) == (336, 336)


@pytest.mark.parametrize("fixture,fmt", [("tiny_llava_dir", "vicuna_v1"), ("tiny_qwen2vl_dir", "chat-template")])
def test_memory_probe_runs_prompt_plus_budget_positions(fixture, fmt, request):
    """The forward pass auto_batch_size sizes batches with (on CUDA) also runs on CPU, for both model families,
    over the batch's encoded prompt plus every position greedy generation may add."""
    import dataclasses

    backend = _load(request.getfixturevalue(fixture), prompt_format=fmt)
    reqs, imgs = _mixed_batch(3)
    for req, im in ((reqs[2], imgs[2]), (reqs[0], imgs[0])):   # with an image, text-only
        prompt_positions = backend.encode([req], [im])["input_ids"].shape[1]
        assert backend.probe_peak(req, im, 2) == (2, prompt_positions + req.max_new_tokens)
        # The budget is what the probe adds: a longer budget, more positions; the prompt alone with none.
        longer = dataclasses.replace(req, max_new_tokens=req.max_new_tokens + 5)
        assert backend.probe_peak(longer, im, 1) == (1, prompt_positions + req.max_new_tokens + 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_generation_and_auto_batch_size(tiny_llava_dir, adapters):
    backend = HFBackend.load(str(tiny_llava_dir), device="auto")
    assert backend.device == "cuda" and backend.dtype == "bfloat16"
    reqs, imgs = _mixed_batch()
    assert len(backend.generate(reqs, imgs)) == len(reqs)
    backend.add_adapter("a", adapters["lora1"])
    backend.activate("a")
    assert len(backend.generate(reqs, imgs)) == len(reqs)
    n = backend.auto_batch_size(reqs, imgs, max_batch_size=64)
    assert n == 64  # a 150 k-parameter model fits any of these
