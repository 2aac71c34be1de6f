"""Importing LLaVA-layout runs (plain LoRA, CoIN MoELoRA, SMoLoRA): same logits and greedy answers as the
native model the checkpoints were written from, projector hot swap, safe loading and named errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cvit_bench.backends.base import GenerationRequest
from cvit_bench.backends.hf import HFBackend
from cvit_bench.data.conversation import get_prompt_format
from cvit_bench.errors import DataError
from cvit_bench.importers.run import ImportRequest, import_run
from cvit_bench.importers.weights import load_weights_file
from llava_layout_fixtures import (LLM_LINEARS, llava_key, load_projector, stage_projector, write_merged, write_parts,
                                   write_stage)

pytestmark = pytest.mark.usefixtures("torch_one_thread")
LORA_TARGET = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
LORA_CONFIG = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "lora_dropout": 0.05, "target_modules": list(LLM_LINEARS),
               "bias": "none", "task_type": "CAUSAL_LM", "fan_in_fan_out": False, "modules_to_save": None,
               "inference_mode": True, "base_model_name_or_path": "/data/vicuna-7b-v1.5"}
FAMILIES = [0, 1, 2, 3, 4, 5]


def _native(hf_dir):
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(hf_dir).eval()


def _randomize(tensors: dict[str, torch.Tensor], seed: int, scale: float = 0.3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k in sorted(tensors):
            if tensors[k].is_floating_point():
                tensors[k].copy_(torch.randn(tensors[k].shape, generator=gen) * scale)


def native_lora_stage(hf_dir: Path, folder: Path, seed: int, with_projector: bool = True, scale: float = 0.3,
                      projector_keys: tuple[str, ...] | None = None):
    """A native HF model with a random LoRA (unmerged, as peft runs it) + stage projector, and its LLaVA-layout
    stage folder."""
    from peft import LoraConfig, get_peft_model

    model = _native(hf_dir)
    projector = stage_projector(model, seed + 100) if with_projector else None
    if projector and projector_keys:        # a stage that trained only part of the projector
        projector = {k: v for k, v in projector.items() if k in projector_keys}
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGET))
    lora = {n: p for n, p in pm.named_parameters() if ".lora_" in n}
    _randomize(lora, seed, scale)
    tensors = {}
    for name, p in lora.items():
        module, _, rest = name[len("base_model.model."):].partition(".lora_")
        tensors[f"base_model.model.{llava_key(module)}.lora_{rest.replace('.default', '')}"] = p.detach().clone()
    native = pm.get_base_model().eval()      # the injected LoRA layers stay active; not a PeftModel wrapper
    if projector:
        load_projector(native, projector)
    write_stage(folder, native, LORA_CONFIG, tensors, projector)
    return native


def native_moe_stage(hf_dir: Path, folder: Path, seed: int, method: str):
    """A native model with our moe-lora/smolora attached (random tensors) + stage projector, and the same
    adapter written in CoIN's / SMoLoRA's fork layout."""
    from cvit_bench.baselines import make_method

    model = _native(hf_dir)
    projector = stage_projector(model, seed + 100)
    if method == "moe-lora":
        impl = make_method("moe-lora", {"lora_r": 8, "lora_alpha": 16, "num_experts": 4, "lora_dropout": 0.0})
        structure = {"tasks": []}
    else:
        impl = make_method("smolora", {"block_rank": 2, "vu_blocks": 2, "if_blocks": 2, "lora_alpha": 16,
                                       "router_grad": "none", "lora_dropout": 0.0})
        structure = {"tasks": [], "families": FAMILIES, "instruction_dim": 384, "instruction_encoder": "test",
                     "template_set": "single"}
    adapter = impl.attach(model, structure)
    impl.on_structure(adapter)
    mine = adapter.tensors()
    _randomize(mine, seed)
    with torch.no_grad():
        for k, v in mine.items():
            if k.endswith(("fuse_vu.bias", "fuse_if.bias")):
                v.zero_()                                   # the fork's fusion layers have no bias
    load_projector(model, projector)
    fork: dict[str, torch.Tensor] = {}
    for name, layer in adapter.layers.items():
        key = "base_model.model." + llava_key(name)

        def experts(side: str, blocks: list[torch.Tensor], start: int = 0) -> None:
            letter = "A" if side == "A" else "B"
            for e, t in enumerate(blocks, start):
                fork[f"{key}.lora_{letter}.lora{letter}.{e}.weight"] = t.detach().clone()
                if letter == "A":     # state_dict() also names the shared parameter as mlp.weight
                    fork[f"{key}.lora_A.loraA.{e}.mlp.weight"] = t.detach().clone()

        if method == "moe-lora":
            experts("A", list(layer.lora_A))
            experts("B", list(layer.lora_B))
            fork[f"{key}.lora_router.weight"] = layer.router.weight.detach().clone()
        else:
            experts("A", list(layer.vu_A)), experts("A", list(layer.if_A), 2)
            experts("B", list(layer.vu_B)), experts("B", list(layer.if_B), 2)
            for ours, theirs in (("vu_router", "lora_vu_gate"), ("if_router", "lora_ins_gate"),
                                 ("fuse_vu", "lora_fc_A"), ("fuse_if", "lora_fc_B")):
                fork[f"{key}.{theirs}.weight"] = getattr(layer, ours).weight.detach().clone()
    if method == "moe-lora":
        config = {**LORA_CONFIG, "peft_type": "MOE_LORA_CoIN", "r": 8, "lora_alpha": 16, "expert_num": 4,
                  "task_embedding_dim": 64}
    else:
        table = adapter.extras["cvit_instruction_table"].embeddings
        config = {**LORA_CONFIG, "peft_type": "SMOLORA", "r": 8, "lora_alpha": 16, "expert_num": 4, "ins_type": 1,
                  "ins_emb": table.tolist()}
    write_stage(folder, model, config, fork, projector)
    return model.eval()


@pytest.fixture(scope="module")
def parts(tiny_llava_dir, tmp_path_factory):
    return write_parts(tiny_llava_dir, tmp_path_factory.mktemp("llava-parts"))


def _requests(n: int = 4, ins_type: int | None = 1):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    reqs = [GenerationRequest(uid=f"u{i}", prompt="What is shown here?" + " Answer briefly." * i, image="x.png",
                              max_new_tokens=6, ins_type=ins_type) for i in range(n)]
    return reqs, images


def _wrap(model, hf_dir) -> HFBackend:
    """The native model behind the same generation code (no adapters of the backend's own)."""
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(hf_dir)
    proc.tokenizer.padding_side = "left"
    return HFBackend(model=model, processor=proc, prompt_format=get_prompt_format("vicuna_v1", proc),
                     model_path=str(hf_dir), model_type="llava", dtype="float32", device="cpu")


def _logits(backend: HFBackend, reqs, images):
    inputs = backend.encode(reqs, images)
    with torch.no_grad(), backend.generation_scope(reqs):
        return inputs, backend.model(**inputs).logits


def assert_same_as_native(backend: HFBackend, stage: str, native, hf_dir, ins_type=None):
    from cvit_bench.adapters.moe.injection import set_request_info

    reqs, images = _requests(ins_type=ins_type)
    backend.activate(stage)
    inputs, got = _logits(backend, reqs, images)
    native_backend = _wrap(native, hf_dir)
    assert torch.equal(native_backend.encode(reqs, images)["input_ids"], inputs["input_ids"])
    set_request_info(native, ins_type=[r.ins_type for r in reqs])
    with torch.no_grad():
        want = native(**inputs).logits
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    assert backend.generate(reqs, images) == native_backend.generate(reqs, images)
    set_request_info(native, ins_type=None)


@pytest.fixture(scope="module")
def lora_run(parts, tiny_llava_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("llava-lora")
    natives = [native_lora_stage(tiny_llava_dir, root / f"src-{i}", seed=i) for i in (1, 2)]
    run = import_run(ImportRequest(format="llava", stages=[root / "src-1", root / "src-2"],
                                   stage_tasks=["scienceqa", "textvqa"], benchmark="cvit", out=root / "run", **parts))
    return run, natives, root


def test_llava_lora_run_matches_native_model_per_stage(lora_run, tiny_llava_dir):
    run, natives, _ = lora_run
    data = json.loads((run / "run.json").read_text())
    assert [s["task"] for s in data["stages"]] == ["scienceqa", "textvqa"]
    assert all(s["projector_sha256"] for s in data["stages"])
    assert {Path(f["path"]).name for f in data["import"]["files"]} >= {"mm_projector.bin", "adapter_model.bin",
                                                                       "non_lora_trainables.bin"}
    backend = HFBackend.load(data["base_model"], dtype="float32", device="cpu")
    for i, stage in enumerate(data["stages"]):
        backend.add_adapter(str(stage["index"]), run / stage["path"])
    for i, native in enumerate(natives):
        assert_same_as_native(backend, str(i + 1), native, tiny_llava_dir)


def test_reimport_reuses_what_is_converted_and_redoes_what_changed(lora_run, parts, monkeypatch):
    import os

    import cvit_bench.importers.run as run_mod
    from cvit_bench.importers.llava import LlavaLora

    run, _, root = lora_run
    before = json.loads((run / "run.json").read_text())
    req = ImportRequest(format="llava", stages=[root / "src-1", root / "src-2"], stage_tasks=["scienceqa", "textvqa"],
                        benchmark="cvit", out=run, **parts)

    def refuse(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(run_mod, "assemble_base", refuse)
    monkeypatch.setattr(run_mod, "_provenance", refuse)
    with monkeypatch.context() as m:
        m.setattr(LlavaLora, "convert", refuse)
        import_run(req)
    assert json.loads((run / "run.json").read_text()) == before
    stat = (root / "src-2" / "adapter_model.bin").stat()
    os.utime(root / "src-2" / "adapter_model.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    calls = []
    original = LlavaLora.convert
    monkeypatch.setattr(run_mod, "_provenance", lambda files: [{"path": str(f)} for f in files])
    monkeypatch.setattr(LlavaLora, "convert", lambda self, d, *a: calls.append(d.name) or original(self, d, *a))
    import_run(req)
    assert calls == ["src-2"]


def test_stage_projector_swaps_and_restores_exactly(lora_run):
    run, _, root = lora_run
    data = json.loads((run / "run.json").read_text())
    stage = run / data["stages"][0]["path"]
    no_proj = root / "same-lora-base-projector"
    shutil.copytree(stage, no_proj)
    (no_proj / "projector.safetensors").unlink()
    backend = HFBackend.load(data["base_model"], dtype="float32", device="cpu")
    reqs, images = _requests()
    _, bare = _logits(backend, reqs, images)
    backend.add_adapter("own", stage)
    backend.add_adapter("base-proj", no_proj)
    backend.activate("base-proj")
    _, plain = _logits(backend, reqs, images)
    backend.activate("own")
    _, swapped = _logits(backend, reqs, images)
    assert (swapped - plain).abs().max() > 1e-3          # the stage's projector changes the outputs
    backend.activate("base-proj")
    assert torch.equal(_logits(backend, reqs, images)[1], plain)   # and the second swap restores them exactly
    backend.activate(None)
    assert torch.equal(_logits(backend, reqs, images)[1], bare)
    backend.activate("own")
    backend.remove_adapter("own")
    backend.remove_adapter("base-proj")
    assert torch.equal(_logits(backend, reqs, images)[1], bare)


@pytest.mark.parametrize("fmt,method,ins_type", [("coin-moelora", "moe-lora", None), ("smolora", "smolora", 1)])
def test_fork_moe_stages_match_native_model(fmt, method, ins_type, parts, tiny_llava_dir, tmp_path):
    natives = [native_moe_stage(tiny_llava_dir, tmp_path / f"src-{i}", seed=i, method=method) for i in (1, 2)]
    run = import_run(ImportRequest(format=fmt, stages=[tmp_path / "src-1", tmp_path / "src-2"],
                                   stage_tasks=["scienceqa", "textvqa"], benchmark="cvit", out=tmp_path / "run",
                                   **parts))
    data = json.loads((run / "run.json").read_text())
    assert data["method"]["name"] == method
    cfg = json.loads((run / data["stages"][0]["path"] / "adapter_config.json").read_text())
    assert cfg["cvit_adapter"] == "cvit-moe" and cfg["method"] == method
    backend = HFBackend.load(data["base_model"], dtype="float32", device="cpu")
    for stage in data["stages"]:
        backend.add_adapter(str(stage["index"]), run / stage["path"])
    for i, native in enumerate(natives):
        assert_same_as_native(backend, str(i + 1), native, tiny_llava_dir, ins_type=ins_type)


def test_stage_that_trained_part_of_the_projector_keeps_the_rest_from_the_base(parts, tiny_llava_dir, tmp_path):
    """non_lora_trainables.bin holds only what had requires_grad (SMoLoRA: linear_1's weight is frozen inside its
    LoRA layer); LLaVA loads it with strict=False, so the rest stays the pretrain projector's."""
    keys = ("linear_1.bias", "linear_2.weight", "linear_2.bias")
    native = native_lora_stage(tiny_llava_dir, tmp_path / "src", seed=7, projector_keys=keys)
    run = import_run(ImportRequest(format="llava", stages=[tmp_path / "src"], stage_tasks=["scienceqa"],
                                   benchmark="cvit", out=tmp_path / "run", **parts))
    data = json.loads((run / "run.json").read_text())
    backend = HFBackend.load(data["base_model"], dtype="float32", device="cpu")
    backend.add_adapter("1", run / data["stages"][0]["path"])
    assert_same_as_native(backend, "1", native, tiny_llava_dir)
    marker = json.loads((run / data["stages"][0]["path"] / "cvit_import.json").read_text())
    assert marker["projector_trained"] == sorted(keys)


class Payload:
    """Not a tensor: a weights-only load must refuse to build it."""


def test_pickle_carrying_an_object_is_refused(tmp_path):
    path = tmp_path / "adapter_model.bin"
    torch.save({"w": torch.zeros(2), "x": Payload()}, path)
    with pytest.raises(DataError, match="refused") as err:
        load_weights_file(path)
    assert str(path) in str(err.value)


def test_missing_key_and_wrong_shape_are_named(parts, tiny_llava_dir, tmp_path):
    native_lora_stage(tiny_llava_dir, tmp_path / "src", seed=1)
    weights = tmp_path / "src" / "adapter_model.bin"
    tensors = torch.load(weights, weights_only=True)
    gone = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"
    good = dict(tensors)
    del tensors[gone]
    torch.save(tensors, weights)
    req = dict(format="llava", stages=[tmp_path / "src"], stage_tasks=["scienceqa"], benchmark="cvit", **parts)
    with pytest.raises(DataError) as err:
        import_run(ImportRequest(out=tmp_path / "run", **req))
    msg = str(err.value)
    assert "1 missing keys" in msg and "model.language_model.layers.1.mlp.down_proj.lora_B.weight" in msg
    assert str(weights) in msg
    assert not (tmp_path / "run" / "run.json").exists()
    bad = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    torch.save({**good, bad: torch.zeros(5, 64)}, weights)
    with pytest.raises(DataError, match=r"lora_A.weight has shape \(5, 64\).*needs \(4, 64\)"):
        import_run(ImportRequest(out=tmp_path / "run", **req))


def test_unsupported_fork_option_is_refused(parts, tiny_llava_dir, tmp_path):
    native_moe_stage(tiny_llava_dir, tmp_path / "src", seed=1, method="smolora")
    cfg_path = tmp_path / "src" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "expert_num": 3}))
    with pytest.raises(DataError, match="expert_num 3 is odd"):
        import_run(ImportRequest(format="smolora", stages=[tmp_path / "src"], stage_tasks=["scienceqa"],
                                 benchmark="cvit", out=tmp_path / "run", **parts))
    cfg_path.write_text(json.dumps({**cfg, "bias": "lora_only"}))
    with pytest.raises(DataError, match="bias 'lora_only' is not supported"):
        import_run(ImportRequest(format="smolora", stages=[tmp_path / "src"], stage_tasks=["scienceqa"],
                                 benchmark="cvit", out=tmp_path / "run", **parts))


def test_vision_tower_padding_with_another_colour_is_refused(parts, tmp_path):
    clip = tmp_path / "clip-other-mean"
    shutil.copytree(parts["vision_tower"], clip)
    cfg = json.loads((clip / "preprocessor_config.json").read_text())
    (clip / "preprocessor_config.json").write_text(json.dumps({**cfg, "image_mean": [0.5, 0.5, 0.5]}))
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "config.json").write_text(json.dumps({"model_type": "llava_llama",
                                                                "mm_projector_type": "mlp2x_gelu",
                                                                "image_aspect_ratio": "pad"}))
    with pytest.raises(DataError, match="preprocessor_config.json: field 'image_mean'"):
        import_run(ImportRequest(format="llava", model_base=parts["model_base"], vision_tower=clip,
                                 projector=parts["projector"], stages=[tmp_path / "stage"], stage_tasks=["scienceqa"],
                                 benchmark="cvit", out=tmp_path / "run"))


def test_image_token_is_added_and_embeddings_padded_to_64(tmp_path):
    """A vicuna-like tokenizer without <image>/<pad>: both are added and the embeddings grow to a multiple of
    64 rows, the old rows untouched and the new ones close to the mean row (as transformers' conversion)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPImageProcessor, LlamaConfig, LlamaForCausalLM
    from transformers import PreTrainedTokenizerFast

    from cvit_bench.importers.llava_layout import LlavaSettings, assemble_base
    from cvit_bench.mini.tiny import train_bpe

    tok = PreTrainedTokenizerFast(tokenizer_object=train_bpe(["<unk>", "<s>", "</s>"], 300, bos="<s>"),
                                  unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    vocab = len(tok)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128))
    llm.save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, image_size=32, patch_size=8))
    clip.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "clip")
    torch.save({"model.mm_projector.0.weight": torch.randn(32, 16), "model.mm_projector.0.bias": torch.randn(32),
                "model.mm_projector.2.weight": torch.randn(32, 32), "model.mm_projector.2.bias": torch.randn(32)},
               tmp_path / "mm_projector.bin")
    base = assemble_base(tmp_path / "llm", tmp_path / "clip", tmp_path / "mm_projector.bin", LlavaSettings(),
                         tmp_path / "base")
    assert base.added_tokens == ["<image>", "<pad>"]
    assert base.vocab_size % 64 == 0 and base.vocab_size >= vocab + 2
    backend = HFBackend.load(str(tmp_path / "base"), dtype="float32", device="cpu")
    t = backend.processor.tokenizer
    assert t.convert_tokens_to_ids("<image>") == vocab and t.pad_token_id == vocab + 1
    assert backend.model.config.image_token_id == vocab
    emb = backend.model.get_input_embeddings().weight.detach()
    old = llm.get_input_embeddings().weight.detach()
    assert torch.equal(emb[:vocab], old)
    assert (emb[vocab:] - old.mean(0)).abs().max() < 0.05


def test_cli_import_run_then_evaluate_and_on_the_fly_checkpoints_agree(lora_run, parts, tmp_path, mini_like):
    from cvit_bench.cli import main

    _, _, root = lora_run
    prepared, bench = mini_like
    runner = CliRunner()
    args = ["--model-base", str(parts["model_base"]), "--vision-tower", str(parts["vision_tower"]),
            "--projector", str(parts["projector"])]
    res = runner.invoke(main, ["import-run", "--format", "llava", *args, "--stage", str(root / "src-1"),
                               "--stage", str(root / "src-2"), "--stage-tasks", "scienceqa,textvqa",
                               "--benchmark", str(bench), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    common = ["--data", str(prepared), "--benchmark", str(bench), "--num-workers", "0", "--device", "cpu"]
    res = runner.invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "e1"),
                               *common])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["evaluate", "--checkpoint", str(root / "src-1"), "--checkpoint", str(root / "src-2"),
                               "--base-model", str(parts["model_base"]), "--vision-tower", str(parts["vision_tower"]),
                               "--projector", str(parts["projector"]), "--import-cache", str(tmp_path / "cache"),
                               "--out", str(tmp_path / "e2"), *common])
    assert res.exit_code == 0, res.output
    preds = {}
    for out in ("e1", "e2"):
        preds[out] = {str(p.relative_to(tmp_path / out)): [json.loads(x)["prediction"] for x in p.read_text().splitlines()]
                      for p in sorted((tmp_path / out / "predictions").rglob("*.jsonl"))}
    assert preds["e1"] == preds["e2"] and len(preds["e1"]) == 3     # cells (1,1), (2,1), (2,2)
    r1 = json.loads((tmp_path / "e1" / "results.json").read_text())
    assert [s["checkpoint_sha256"] for s in r1["stages"]] == [s["sha256"] for s in
                                                    json.loads((tmp_path / "run" / "run.json").read_text())["stages"]]
    assert r1["method"]["name"] == "lora" and r1["method"]["imported_from"] == "llava"
    res = runner.invoke(main, ["report", str(tmp_path / "e1" / "results.json"), "--out", str(tmp_path / "report"),
                               "--format", "svg"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report" / "report.html").is_file()
    # a bad pickle through the CLI: exit code 2 naming the file
    bad = tmp_path / "bad-stage"
    shutil.copytree(root / "src-1", bad)
    torch.save({"x": Payload()}, bad / "non_lora_trainables.bin")
    res = runner.invoke(main, ["import-run", "--format", "llava", *args, "--stage", str(bad), "--stage-tasks",
                               "scienceqa", "--benchmark", str(bench), "--out", str(tmp_path / "run-bad")])
    assert res.exit_code == 2 and "non_lora_trainables.bin" in res.output and "refused" in res.output


@pytest.fixture(scope="module")
def mini_like(tmp_path_factory):
    """A 2-task cut of the cvit benchmark (short generations) prepared from generated CVIT files."""
    import yaml

    from cvit_bench.benchmark import load_benchmark
    from cvit_bench.data.prepare import prepare
    from cvit_fixtures import make_cvit_files

    tasks = ["scienceqa", "textvqa"]
    data = yaml.safe_load(Path(load_benchmark("cvit").source_file).read_text())
    data["id"], data["upstream"], data["downstream"] = "cvit-tiny2", tasks, []
    data["tasks"] = {t: {**data["tasks"][t], "max_new_tokens": 4} for t in tasks}
    root = tmp_path_factory.mktemp("imp-bench")
    path = root / "cvit-tiny2.yaml"
    path.write_text(yaml.safe_dump(data))
    raw = make_cvit_files(root / "raw", "single", n=4)
    return prepare(str(path), templates="single", source="cvit-files", raw_root=raw, out=root / "prep").folder, path


def test_merged_llava_folder_as_model_base(lora_run, parts, tiny_llava_dir, tmp_path):
    """--model-base may be a merged LLaVA folder (llava_llama: LLM + mm_projector + vision tower in one state
    dict, as LLaVA's merge script writes); then no --projector is needed and the result is the same."""
    _, natives, root = lora_run
    model = _native(tiny_llava_dir)
    merged = write_merged(tmp_path / "llava-merged", parts["model_base"], model.state_dict(), model)
    run = import_run(ImportRequest(format="llava", model_base=merged, vision_tower=parts["vision_tower"],
                                   stages=[root / "src-1"], stage_tasks=["scienceqa"], benchmark="cvit",
                                   out=tmp_path / "run"))
    data = json.loads((run / "run.json").read_text())
    backend = HFBackend.load(data["base_model"], dtype="float32", device="cpu")
    backend.add_adapter("1", run / data["stages"][0]["path"])
    assert_same_as_native(backend, "1", natives[0], tiny_llava_dir)


def test_merged_full_stage_becomes_a_lora_stage(parts, tiny_llava_dir, tmp_path):
    """A stage saved as a merged full model (base + LoRA merged, its own projector) is imported as a LoRA of the
    given rank recovered by SVD, with the same outputs as the merged model; too small a rank is refused."""
    native = native_lora_stage(tiny_llava_dir, tmp_path / "unmerged", seed=5, scale=0.05)
    state = {k: v.detach().clone() for k, v in _native(tiny_llava_dir).state_dict().items()}
    for name, module in native.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            delta = module.lora_B["default"].weight @ module.lora_A["default"].weight * module.scaling["default"]
            state[name + ".weight"] = module.get_base_layer().weight.detach() + delta.detach()
    for k, v in native.model.multi_modal_projector.state_dict().items():
        state["model.multi_modal_projector." + k.replace("base_layer.", "")] = v.detach().clone()
    merged = _native(tiny_llava_dir)
    merged.load_state_dict(state)
    stage = write_merged(tmp_path / "merged-stage", parts["model_base"], state, native, vision=False)
    req = dict(format="llava", stages=[stage], stage_tasks=["scienceqa"], benchmark="cvit", **parts)
    with pytest.raises(DataError, match="not of rank 2"):
        import_run(ImportRequest(out=tmp_path / "run2", options={"merged_rank": 2}, **req))
    run = import_run(ImportRequest(out=tmp_path / "run", options={"merged_rank": 4}, **req))
    data = json.loads((run / "run.json").read_text())
    assert data["method"]["config"]["from_merged"] and data["stages"][0]["projector_sha256"]
    backend = HFBackend.load(data["base_model"], dtype="float32", device="cpu")
    backend.add_adapter("1", run / data["stages"][0]["path"])
    assert_same_as_native(backend, "1", merged.eval(), tiny_llava_dir)


@pytest.mark.parametrize("fmt,method", [("coin-moelora", "moe-lora"), ("smolora", "smolora")])
def test_cli_fork_runs_evaluate_end_to_end(fmt, method, parts, tiny_llava_dir, tmp_path, mini_like):
    """Fork stages straight into evaluate (on-the-fly import; SMoLoRA routes on each sample's family)."""
    from cvit_bench.cli import main

    for i in (1, 2):
        native_moe_stage(tiny_llava_dir, tmp_path / f"src-{i}", seed=i, method=method)
    prepared, bench = mini_like
    res = CliRunner().invoke(main, [
        "evaluate", "--checkpoint", str(tmp_path / "src-1"), "--checkpoint", str(tmp_path / "src-2"),
        "--base-model", str(parts["model_base"]), "--vision-tower", str(parts["vision_tower"]),
        "--projector", str(parts["projector"]), "--import-cache", str(tmp_path / "cache"),
        "--data", str(prepared), "--benchmark", str(bench), "--num-workers", "0", "--device", "cpu",
        "--out", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["method"]["name"] == method and results["method"]["imported_from"] == fmt
    assert len(list((tmp_path / "eval" / "predictions").rglob("*.jsonl"))) == 3


# ------------------------------------------------------------------------------------ refusals of import-run
def _import_cli(parts, stage: Path, out: Path, fmt: str = "llava"):
    from cvit_bench.cli import main

    return CliRunner().invoke(main, ["import-run", "--format", fmt, "--model-base", str(parts["model_base"]),
                                     "--vision-tower", str(parts["vision_tower"]), "--projector", str(parts["projector"]),
                                     "--stage", str(stage), "--stage-tasks", "scienceqa", "--benchmark", "cvit",
                                     "--out", str(out)])


@pytest.fixture(scope="module")
def good_lora_stage(tiny_llava_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good-stage") / "src"
    native_lora_stage(tiny_llava_dir, folder, seed=3)
    return folder


def _refused(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.output, repr(result.exception))
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


@pytest.mark.parametrize("name", ["adapter_model.bin", "non_lora_trainables.bin"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_a_truncated_stage_file_is_refused_naming_it(parts, good_lora_stage, tmp_path, name, keep):
    stage = tmp_path / "src"
    shutil.copytree(good_lora_stage, stage)
    data = (stage / name).read_bytes()
    (stage / name).write_bytes(data[:int(len(data) * keep)])
    _refused(_import_cli(parts, stage, tmp_path / "run"), str(stage / name))
    assert not (tmp_path / "run" / "run.json").exists()


ADAPTER_CONFIG_CASES = {
    "alpha-nan": ('{"lora_alpha": NaN}', "lora_alpha", "finite"),
    "alpha-inf": ('{"lora_alpha": Infinity}', "lora_alpha", "finite"),
    "alpha-negative": ('{"lora_alpha": -8}', "lora_alpha", "positive"),
    "alpha-string": ('{"lora_alpha": "8"}', "lora_alpha", "number"),
    "r-zero": ('{"r": 0}', "r", "positive"),
    "r-float": ('{"r": 4.5}', "r", "positive integer"),
    "r-nan": ('{"r": NaN}', "r", "positive integer"),
    "dropout": ('{"lora_dropout": 2}', "lora_dropout", "0 <= "),
    "targets-number": ('{"target_modules": 5}', "target_modules", "a list of module names or a regular expression"),
    "targets-mixed": ('{"target_modules": ["q_proj", 3]}', "target_modules", "a list of module names"),
    "targets-unknown": ('{"target_modules": ["q_proj", "no_such_proj"]}', "target_modules", "no_such_proj"),
    "targets-bad-regex": ('{"target_modules": "(["}', "target_modules", "not a valid regular expression"),
    "targets-regex-nothing": ('{"target_modules": ".*nothing_here"}', "target_modules", "matches no module"),
}


@pytest.mark.parametrize("case", list(ADAPTER_CONFIG_CASES))
def test_adapter_config_is_validated_against_the_base(parts, good_lora_stage, tmp_path, case):
    edit, field, needle = ADAPTER_CONFIG_CASES[case]
    stage = tmp_path / "src"
    shutil.copytree(good_lora_stage, stage)
    cfg_path = stage / "adapter_config.json"
    cfg = cfg_path.read_text()
    cfg_path.write_text(cfg.rstrip().rstrip("}") + ", " + edit.strip()[1:])      # the edit's keys override
    _refused(_import_cli(parts, stage, tmp_path / "run"), str(cfg_path), f"field '{field}'", needle)
    assert not (tmp_path / "run" / "run.json").exists()


def _shrink_one(path: Path, pick, shrink) -> str:
    tensors = torch.load(path, weights_only=True)
    key = sorted(k for k in tensors if pick(k))[0]
    tensors[key] = shrink(tensors[key])
    torch.save(tensors, path)
    return key


TRUNCATED_TENSORS = {
    "lora-1d": ("adapter_model.bin", lambda k: ".lora_A." in k, lambda t: t.reshape(-1)[:3]),
    "lora-0d": ("adapter_model.bin", lambda k: ".lora_B." in k, lambda t: t.reshape(-1)[0]),
    "lora-empty": ("adapter_model.bin", lambda k: ".lora_A." in k, lambda t: t[:0]),
    "projector-0d": ("non_lora_trainables.bin", lambda k: k.endswith("weight"), lambda t: t.reshape(-1)[0]),
    "projector-1d": ("non_lora_trainables.bin", lambda k: k.endswith("weight"), lambda t: t.reshape(-1)[:5]),
    "projector-bias-0d": ("non_lora_trainables.bin", lambda k: k.endswith("bias"), lambda t: t.reshape(-1)[0]),
}


@pytest.mark.parametrize("case", list(TRUNCATED_TENSORS))
def test_a_stage_with_truncated_tensors_is_refused_naming_file_and_tensor(parts, good_lora_stage, tmp_path, case):
    name, pick, shrink = TRUNCATED_TENSORS[case]
    stage = tmp_path / "src"
    shutil.copytree(good_lora_stage, stage)
    _shrink_one(stage / name, pick, shrink)
    _refused(_import_cli(parts, stage, tmp_path / "run"), str(stage / name))
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.fixture(scope="module")
def good_fork_stages(tiny_llava_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("good-fork")
    for method in ("moe-lora", "smolora"):
        native_moe_stage(tiny_llava_dir, root / method, seed=2, method=method)
    return {"coin-moelora": root / "moe-lora", "smolora": root / "smolora"}


TRUNCATED_FORK = {
    "expert-1d": (lambda k: ".lora_A.loraA.1.weight" in k, lambda t: t.reshape(-1)[:3]),
    "expert-0d": (lambda k: ".lora_B.loraB.0.weight" in k, lambda t: t.reshape(-1)[0]),
    "gate-0d": (lambda k: ".lora_router.weight" in k or ".lora_vu_gate.weight" in k, lambda t: t.reshape(-1)[0]),
    "gate-empty": (lambda k: ".lora_router.weight" in k or ".lora_ins_gate.weight" in k, lambda t: t[:0]),
}


@pytest.mark.parametrize("fmt", ["coin-moelora", "smolora"])
@pytest.mark.parametrize("case", list(TRUNCATED_FORK))
def test_a_fork_stage_with_truncated_tensors_is_refused(parts, good_fork_stages, tmp_path, fmt, case):
    pick, shrink = TRUNCATED_FORK[case]
    stage = tmp_path / "src"
    shutil.copytree(good_fork_stages[fmt], stage)
    _shrink_one(stage / "adapter_model.bin", pick, shrink)
    _refused(_import_cli(parts, stage, tmp_path / "run", fmt), str(stage / "adapter_model.bin"))


STAGE_REMAINS = {
    "empty": (),
    "config-only": ("config.json",),
    "adapter-config-only": ("adapter_config.json",),
    "no-adapter-weights": ("config.json", "adapter_config.json", "non_lora_trainables.bin"),
}


@pytest.mark.parametrize("case", list(STAGE_REMAINS))
def test_a_stage_folder_missing_files_is_refused(parts, good_lora_stage, tmp_path, case):
    stage = tmp_path / "src"
    stage.mkdir()
    for name in STAGE_REMAINS[case]:
        shutil.copy2(good_lora_stage / name, stage / name)
    _refused(_import_cli(parts, stage, tmp_path / "run"), str(stage))


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-pickle", "zip"])
def test_every_cut_of_a_weights_file_is_a_named_refusal(tmp_path, legacy):
    """A truncated ``.bin`` (an empty file, a legacy pickle cut anywhere: EOFError without a message, struct.error)
    is a DataError naming the file, never an IndexError."""
    path = tmp_path / "adapter_model.bin"
    torch.save({"a": torch.zeros(16, 16), "b": torch.ones(3)}, path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    for cut in [*range(0, 400, 3), len(data) // 2, len(data) - 1]:
        path.write_bytes(data[:cut])
        with pytest.raises(DataError) as err:
            load_weights_file(path)
        assert str(path) in str(err.value), cut


def test_a_truncated_legacy_adapter_is_refused_through_the_cli(parts, good_lora_stage, tmp_path):
    stage = tmp_path / "src"
    shutil.copytree(good_lora_stage, stage)
    tensors = torch.load(stage / "adapter_model.bin", weights_only=True)
    torch.save(tensors, stage / "adapter_model.bin", _use_new_zipfile_serialization=False)
    (stage / "adapter_model.bin").write_bytes(b"")
    _refused(_import_cli(parts, stage, tmp_path / "run"), str(stage / "adapter_model.bin"), "truncated or corrupt")
    torch.save(tensors, stage / "adapter_model.bin", _use_new_zipfile_serialization=False)
    data = (stage / "adapter_model.bin").read_bytes()
    (stage / "adapter_model.bin").write_bytes(data[:len(data) // 2])
    _refused(_import_cli(parts, stage, tmp_path / "run"), str(stage / "adapter_model.bin"))
