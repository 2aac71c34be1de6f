"""The sequential trainer and the baseline methods on the tiny LLaVA and a small prepared CVIT subset."""
from __future__ import annotations

import json
import math
import random
import shutil

import pytest
import torch
from click.testing import CliRunner
from cvit_fixtures import make_cvit_files
from safetensors.torch import load_file

from cvit_bench.baselines import get_method, load_for_eval, make_method, method_names
from cvit_bench.baselines.data import IGNORE_INDEX, Collator, encode_samples, select_by_hash
from cvit_bench.baselines.replay import ReplayOptions, draw_replay
from cvit_bench.formats.run_file import read_run
from cvit_bench.baselines.trainer import answer_loss, stage_schedule, step_plan, train_run, warmup_count
from cvit_bench.cli.train import train_command
from cvit_bench.data.conversation import get_prompt_format
from cvit_bench.errors import CvitError, UnknownNameError
from cvit_bench.files import sha256_file
from cvit_bench.formats.manifest import image_root, read_manifest
from cvit_bench.data.prepare import prepare
from cvit_bench.formats.sample import Sample, read_samples

FAST = dict(batch_size=4, grad_accum=1, lr=5e-3, max_steps_per_task=3, options={"lora_r": 4}, warmup_steps=1)
TASKS = ["flickr30k", "imagenet"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def prepared(small_train_data):
    return small_train_data


@pytest.fixture(scope="module")
def processor(tiny_llava_processor):
    return tiny_llava_processor


def _mean_answer_loss(model, processor, examples) -> float:
    collate = Collator(processor)
    with torch.no_grad():
        batch = collate(examples)
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        return float(answer_loss(logits, batch["labels"]))


# --- run directory format, resume -------------------------------------------------------------------------

def test_run_writes_the_run_dir_format(prepared, tiny_llava_dir, tmp_path):
    out = tmp_path / "run"
    info = train_run("seq-lora", tiny_llava_dir, prepared, out, tasks=TASKS, **FAST)
    run = json.loads((out / "run.json").read_text())
    assert run["schema_version"] == 1 and run["benchmark"] == "cvit" and run["template_set"] == "single"
    assert run["method"]["name"] == "seq-lora" and run["method"]["config"]["lora_r"] == 4
    assert run["method"]["config"]["lora_alpha"] is None  # α = 2r
    assert run["kind"] == "sequential" and run["eval_adapter"] == "latest"
    assert [s["path"] for s in run["stages"]] == ["stage-01-flickr30k", "stage-02-imagenet"]
    assert [(s["index"], s["task"]) for s in run["stages"]] == [(1, "flickr30k"), (2, "imagenet")]
    for entry in run["stages"] + run["fewshot"]:
        folder = out / entry["path"]
        assert (folder / "adapter_config.json").is_file()
        assert entry["sha256"] == sha256_file(folder / "adapter_model.safetensors")
        assert json.loads((folder / "cvit_stage.json").read_text())["method"] == "seq-lora"
        cfg = json.loads((folder / "adapter_config.json").read_text())
        assert cfg["r"] == 4 and cfg["lora_alpha"] == 8
        keys = load_file(str(folder / "adapter_model.safetensors")).keys()
        assert keys and all("language_model" in k for k in keys)  # LLM-only LoRA, vision tower untouched
    # Few-shot stages (places365 has fewshot-5/-10 splits here) start from the final upstream adapter.
    assert [(f["name"], f["task"], f["path"]) for f in run["fewshot"]] == [
        ("fewshot-5", "places365", "fewshot-5-places365"), ("fewshot-10", "places365", "fewshot-10-places365")]
    assert all(f["from"] == {"path": "stage-02-imagenet", "sha256": run["stages"][1]["sha256"]} for f in run["fewshot"])
    assert run["stages"][0]["train"]["steps"] == 3 and run["stages"][0]["train"]["samples"] == 8
    assert info.trained == [s["path"] for s in run["stages"] + run["fewshot"]] and info.skipped == []
    assert not list(out.glob(".*tmp*"))


def test_interrupted_stage_keeps_previous_and_resume_skips_done(prepared, tiny_llava_dir, tmp_path):
    out = tmp_path / "run"

    def boom(event):
        if event.stage.index == 2 and event.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run("seq-lora", tiny_llava_dir, prepared, out, tasks=TASKS, fewshot=False, callbacks=[boom], **FAST)
    run = read_run(out).to_dict()
    assert [s["path"] for s in run["stages"]] == ["stage-01-flickr30k"]
    first_sha = run["stages"][0]["sha256"]
    assert sha256_file(out / "stage-01-flickr30k" / "adapter_model.safetensors") == first_sha
    assert not (out / "stage-02-imagenet").exists() and not list(out.glob(".*tmp*"))

    info = train_run("seq-lora", tiny_llava_dir, prepared, out, tasks=TASKS, fewshot=False, **FAST)
    assert info.skipped == ["stage-01-flickr30k"] and info.trained == ["stage-02-imagenet"]
    run = read_run(out).to_dict()
    assert [s["path"] for s in run["stages"]] == ["stage-01-flickr30k", "stage-02-imagenet"]
    assert run["stages"][0]["sha256"] == first_sha

    # A damaged stage is detected by its hash and retrained; the stages before it are kept.
    (out / "stage-02-imagenet" / "adapter_model.safetensors").write_bytes(b"garbage")
    info = train_run("seq-lora", tiny_llava_dir, prepared, out, tasks=TASKS, fewshot=False, **FAST)
    assert info.skipped == ["stage-01-flickr30k"] and info.trained == ["stage-02-imagenet"]
    assert entry_hash_ok(out, read_run(out).to_dict()["stages"][1])

    # Nothing left to do: no model is even loaded.
    info = train_run("seq-lora", tiny_llava_dir, prepared, out, tasks=TASKS, fewshot=False, **FAST)
    assert info.trained == [] and len(info.skipped) == 2


def entry_hash_ok(out, entry) -> bool:
    return sha256_file(out / entry["path"] / "adapter_model.safetensors") == entry["sha256"]


def test_resume_continues_from_the_stored_adapter(prepared, tiny_llava_dir, tmp_path):
    """Stage 2 of an interrupted+resumed run equals stage 2 of an uninterrupted run (same seed)."""
    straight, resumed = tmp_path / "a", tmp_path / "b"
    train_run("seq-lora", tiny_llava_dir, prepared, straight, tasks=TASKS, fewshot=False, **FAST)
    train_run("seq-lora", tiny_llava_dir, prepared, resumed, tasks=TASKS[:1], fewshot=False, **FAST)
    train_run("seq-lora", tiny_llava_dir, prepared, resumed, tasks=TASKS, fewshot=False, **FAST)  # extends the run
    a = load_file(str(straight / "stage-02-imagenet" / "adapter_model.safetensors"))
    b = load_file(str(resumed / "stage-02-imagenet" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_training_lowers_the_answer_loss(prepared, tiny_llava_dir, processor, tmp_path):
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "run"
    train_run("seq-lora", tiny_llava_dir, prepared, out, tasks=["imagenet"], fewshot=False,
              **{**FAST, "max_steps_per_task": 12})
    samples = read_samples(prepared / "cvit" / "imagenet" / "train.parquet")
    enc = encode_samples(samples, processor=processor, prompt_format=get_prompt_format("vicuna_v1", processor),
                         image_root=image_root(prepared / "cvit", read_manifest(prepared / "cvit")), image_mode="crop")
    base = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir).eval()
    before = _mean_answer_loss(base, processor, enc.examples)
    tuned = load_for_eval(base, out / "stage-01-imagenet")
    after = _mean_answer_loss(tuned, processor, enc.examples)
    assert after < before - 0.5, (before, after)
    stats = read_run(out).to_dict()["stages"][0]["train"]
    assert stats["loss_last"] < stats["loss_first"]


# --- data: answer-only labels ---------------------------------------------------------------------------

def test_labels_cover_only_the_answer_and_eos(processor, tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.png")
    common = dict(question="What color is it?", instruction="Answer the question using a single word or phrase.",
                  template_set="single", template_index=0, prompt="What color is it?\nAnswer the question using a "
                  "single word or phrase.", references=["red"])
    samples = [Sample(uid="t/train/1", task="t", split="train", source_id="1", image="a.png", target="red", **common),
               Sample(uid="t/train/2", task="t", split="train", source_id="2", image=None, target="dark red", **common)]
    fmt = get_prompt_format("vicuna_v1", processor)
    enc = encode_samples(samples, processor=processor, prompt_format=fmt, image_root=tmp_path)
    tok = processor.tokenizer
    for ex, s in zip(enc.examples, samples):
        answer = ex.labels != IGNORE_INDEX
        first = int(answer.nonzero()[0])
        assert answer[first:].all()                      # one contiguous answer span at the end
        assert torch.equal(ex.labels[answer], ex.input_ids[answer])
        assert ex.input_ids[-1] == tok.eos_token_id      # the model learns to stop
        assert tok.decode(ex.input_ids[answer][:-1]).strip() == s.target
        # The prefix is exactly what the model sees at evaluation (image tokens expanded by the processor).
        prompt = fmt.render_eval(s.prompt, s.image is not None)
        if s.image:
            img = Image.open(tmp_path / "a.png").convert("RGB")
            expected = processor(images=[img], text=[prompt], return_tensors="pt")["input_ids"][0]
            assert int((ex.input_ids == processor.tokenizer.image_token_id).sum()) == 16
        else:
            expected = torch.tensor(tok(prompt)["input_ids"])
        assert torch.equal(ex.input_ids[:first], expected)
    assert isinstance(enc.examples[0].image, dict) and enc.examples[1].image is None
    batch = Collator(processor)(enc.examples)
    assert batch["pixel_values"].shape[0] == 1          # one image in the batch
    assert (batch["attention_mask"].sum(1) == torch.tensor([e.n_tokens for e in enc.examples])).all()
    assert batch["attention_mask"][:, -1].any()          # no all-padding column
    # Lazy images (over the cache budget) give the same batch.
    lazy = encode_samples(samples, processor=processor, prompt_format=fmt, image_root=tmp_path, cache_bytes=0)
    lazy_batch = Collator(processor)(lazy.examples)
    assert torch.allclose(lazy_batch["pixel_values"], batch["pixel_values"])
    # A prefix longer than max_length leaves nothing to learn: dropped and reported.
    short = encode_samples(samples, processor=processor, prompt_format=fmt, image_root=tmp_path, max_length=20)
    assert short.dropped == ["t/train/1", "t/train/2"]


# --- names, options, data mismatch ----------------------------------------------------------------------

def test_unknown_method_and_option_list_the_valid_ones(prepared, tiny_llava_dir, tmp_path):
    assert set(method_names()) >= {"seq-lora", "dora", "replay", "ewc", "lwf", "multitask", "dir-lora", "zero-shot"}
    with pytest.raises(UnknownNameError, match="valid methods: .*dir-lora.*seq-lora"):
        get_method("seqlora")
    with pytest.raises(CvitError, match="unknown option 'buffer' for method 'replay'; valid options: .*buffer_fraction"):
        make_method("replay", {"buffer": "3"})
    with pytest.raises(CvitError, match="lora_r"):
        make_method("seq-lora", {"lora_r": "many"})
    with pytest.raises(CvitError, match="this method takes no options"):
        make_method("zero-shot", {"lora_r": 8})
    cfg = make_method("replay", {"buffer-size": "5", "replay_ratio": "0.3", "use_dora": "true"}).config
    assert (cfg.buffer_size, cfg.replay_ratio, cfg.use_dora) == (5, 0.3, True)
    with pytest.raises(UnknownNameError):
        train_run("nope", tiny_llava_dir, prepared, tmp_path / "x")
    with pytest.raises(UnknownNameError, match="valid upstream task"):
        train_run("seq-lora", tiny_llava_dir, prepared, tmp_path / "x", tasks=["places365"])
    result = CliRunner().invoke(train_command, ["--method", "ewc", "--base-model", str(tiny_llava_dir), "--data",
                                                str(prepared), "--out", str(tmp_path / "y"), "--option", "lambda=3"])
    assert isinstance(result.exception, CvitError) and "valid options" in str(result.exception)


def test_data_from_another_template_set_is_refused(prepared, tiny_llava_dir, tmp_path):
    out = tmp_path / "run"
    train_run("seq-lora", tiny_llava_dir, prepared, out, tasks=["imagenet"], fewshot=False, **FAST)
    raw = make_cvit_files(tmp_path / "raw5", "five", n=4)
    prepare("cvit", templates="five", source="cvit-files", raw_root=raw, out=tmp_path / "five", tasks=["imagenet"])
    with pytest.raises(CvitError, match="template set 'five'.*template set 'single'"):
        train_run("seq-lora", tiny_llava_dir, tmp_path / "five", out, tasks=["imagenet"], fewshot=False, **FAST)
    with pytest.raises(CvitError, match="other settings.*lr"):
        train_run("seq-lora", tiny_llava_dir, prepared, out, tasks=["imagenet"], fewshot=False, **{**FAST, "lr": 1.0})


# --- every method ---------------------------------------------------------------------------------------

METHOD_OPTIONS = {"replay": {"buffer_fraction": 0.25, "replay_ratio": 0.5}, "ewc": {"fisher_samples": 4}}


@pytest.mark.parametrize("method", ["seq-lora", "dora", "replay", "ewc", "lwf", "multitask", "dir-lora", "zero-shot"])
def test_each_method_trains_and_loads(method, prepared, tiny_llava_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    out = tmp_path / method
    opts = {**FAST["options"], **METHOD_OPTIONS.get(method, {})} if method != "zero-shot" else {}
    kwargs = {**FAST, "options": opts, "max_steps_per_task": 2}
    info = train_run(method, tiny_llava_dir, prepared, out, tasks=TASKS, fewshot=False, **kwargs)
    run = read_run(out).to_dict()
    cls = get_method(method)
    assert run["kind"] == cls.run_kind and run["eval_adapter"] == cls.eval_adapter
    expected = {"zero-shot": [], "multitask": ["stage-01-multitask"]}.get(method, ["stage-01-flickr30k", "stage-02-imagenet"])
    assert [s["path"] for s in run["stages"]] == expected == info.trained
    if not expected:
        return
    last = out / expected[-1]
    base = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir).eval()
    ids = torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = load_for_eval(base, last)   # through the method recorded in the folder
        after = tuned(input_ids=ids).logits
    assert not torch.allclose(before, after)
    if method == "multitask":
        assert run["stages"][0]["tasks"] == TASKS and run["stages"][0]["train"]["samples"] == 16
    if method == "dir-lora":
        assert run["eval_adapter"] == "own-task" and run["method"]["kind"] == "reference"
    if method == "dora":
        assert json.loads((last / "adapter_config.json").read_text())["use_dora"] is True
    if method == "ewc":
        stats = [s["train"] for s in run["stages"]]
        assert stats[0]["extra_loss_mean"] == 0.0 and stats[1]["extra_loss_mean"] > 0.0
        state = load_file(str(out / expected[0] / "ewc_state.safetensors"))
        assert any(k.startswith("fisher::") and v.abs().sum() > 0 for k, v in state.items())
    if method == "lwf":
        stats = [s["train"] for s in run["stages"]]
        assert stats[0]["extra_loss_mean"] == 0.0 and stats[1]["extra_loss_mean"] > 0.0
    if method == "replay":
        first, second = (s["train"] for s in run["stages"])
        assert (first["samples"], first["replayed"]) == (8, 0)   # nothing buffered before the first task
        # buffer: round(0.25 * 8) = 2 flickr30k samples; replayed: round(0.5 * 8) = 4 drawn from it
        assert (second["task_samples"], second["buffer"], second["replayed"]) == (8, 2, 4)
        assert second["replayed_from"] == {"flickr30k": 4} and second["samples"] == 12


# --- pure pieces ----------------------------------------------------------------------------------------

def test_replay_buffer_and_draw_are_deterministic():
    from cvit_bench.baselines.data import Example

    exs = [Example(uid=f"t/train/{i}", task="t", input_ids=torch.tensor([i]), labels=torch.tensor([i]))
           for i in range(10)]
    assert [e.uid for e in select_by_hash(exs, 3, 0)] == [e.uid for e in select_by_hash(exs[::-1], 3, 0)]
    assert select_by_hash(exs, 3, 0) != select_by_hash(exs, 3, 1)
    drawn = draw_replay(exs[:4], 10, random.Random(0))
    counts = {e.uid: sum(d.uid == e.uid for d in drawn) for e in exs[:4]}
    assert len(drawn) == 10 and sorted(counts.values()) == [2, 2, 3, 3]   # full passes before repeats
    assert ReplayOptions(buffer_fraction=0.2).buffer_share(600) == 120
    assert ReplayOptions(buffer_size=50).buffer_share(20) == 20


def _stage_lrs(schedule_for, lr: float, total: int) -> list[float]:
    """The lr each of ``total`` optimizer steps uses under the schedule ``schedule_for(optimizer)`` builds."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)
    schedule = schedule_for(optimizer)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return lrs


def test_stage_schedule_is_the_documented_sequence_and_the_library_cosine():
    """The demo recipe (cvit_bench/mini/demo.py MINI_TRAINING): the shipped runs depend on this exact lr sequence."""
    from transformers import get_cosine_schedule_with_warmup

    from cvit_bench.mini.demo import MINI_TRAINING

    lr, total, warm = MINI_TRAINING["lr"], MINI_TRAINING["max_steps_per_task"], MINI_TRAINING["warmup_steps"]
    documented = [lr * (s + 1) / warm if s < warm else lr * 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))
                  for s in range(total)]
    ours = _stage_lrs(lambda opt: stage_schedule(opt, total, warm), lr, total)
    library = _stage_lrs(lambda opt: get_cosine_schedule_with_warmup(opt, warm, total), lr, total)
    assert ours == pytest.approx(documented, rel=1e-9, abs=0)
    # The decay is the library's to the bit; its warm-up starts at lr 0, one step behind the trainer's.
    assert ours[warm:] == library[warm:]
    assert library[0] == 0.0 and ours[0] == lr / warm and ours[warm - 1] == lr


def test_schedule_and_step_plan():
    total, warm = 10, warmup_count(10, 0.03, None)
    assert warm == 1
    factors = [v / 1e-3 for v in _stage_lrs(lambda opt: stage_schedule(opt, total, 2), 1e-3, total)]
    assert factors[:3] == pytest.approx([0.5, 1.0, 1.0], rel=1e-12)
    assert all(a >= b for a, b in zip(factors[2:], factors[3:])) and factors[-1] > 0
    plan = step_plan(10, batch_size=3, grad_accum=2, epochs=2, max_steps=None, seed=0)
    assert len(plan) == 4 and sorted(i for step in plan[:2] for b in step for i in b) == list(range(10))
    assert len(step_plan(10, batch_size=3, grad_accum=1, epochs=1, max_steps=7, seed=0)) == 7
    shards = [step_plan(10, batch_size=3, grad_accum=1, epochs=1, max_steps=None, seed=0, rank=r, world=3)
              for r in range(3)]
    assert len({len(s) for s in shards}) == 1        # every process makes the same number of steps
    assert {i for s in shards for step in s for b in step for i in b} == set(range(10))  # together: all samples


def test_cli_trains_and_resumes(prepared, tiny_llava_dir, tmp_path):
    args = ["--method", "seq-lora", "--base-model", str(tiny_llava_dir), "--data", str(prepared), "--out",
            str(tmp_path / "run"), "--tasks", "imagenet", "--lora-r", "4", "--batch-size", "4", "--grad-accum", "1",
            "--max-steps-per-task", "2", "--no-fewshot", "--device", "cpu"]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output
    assert "trained" in result.output and read_run(tmp_path / "run").to_dict()["method"]["config"]["lora_r"] == 4
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0 and "kept" in result.output
    shutil.rmtree(tmp_path / "run")


def test_qwen2vl_with_its_chat_template(prepared, tiny_qwen2vl_dir, tmp_path):
    """Dynamic image tokens and per-token processor outputs (mm_token_type_ids) go through the same path."""
    out = tmp_path / "run"
    train_run("seq-lora", tiny_qwen2vl_dir, prepared, out, tasks=["imagenet"], fewshot=False,
              prompt_format="chat-template", **FAST)
    run = read_run(out).to_dict()
    assert run["prompt_format"] == "chat-template" and len(run["stages"]) == 1
    assert entry_hash_ok(out, run["stages"][0])


def test_cli_show_options_lists_a_methods_typed_options():
    from click.testing import CliRunner

    from cvit_bench.cli import main

    res = CliRunner().invoke(main, ["train", "--method", "replay", "--show-options"])
    assert res.exit_code == 0, res.output
    assert "buffer_fraction = " in res.output and "lora_r = 128" in res.output
    res = CliRunner().invoke(main, ["train", "--method", "replay"])
    assert res.exit_code == 2 and "--base-model" in res.output
