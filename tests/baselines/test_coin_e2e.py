"""CoIN end to end on a tiny model over all 8 tasks, from the CLI: prepare (coin-files) → train → evaluate →
score → report → leaderboard (re-scored CoIN table + General Knowledge table) → judge; and every method trains
on CoIN. Kept fast: 2 samples per split and a copy of coin.yaml whose generation budget is 4 tokens."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from coin_fixtures import make_coin_files
from cvit_bench.baselines import method_names
from cvit_bench.formats.run_file import read_run
from cvit_bench.benchmark import load_benchmark

ORDER = ["scienceqa", "textvqa", "imagenet", "gqa", "vizwiz", "grounding", "vqav2", "ocrvqa"]
META = {"method": {"name": "SeqLoRA-tiny", "family": "sequential", "description": "tiny"},
        "base_model": {"name": "tiny-llava", "revision": "seed0"}, "trainable_params": 1000,
        "extra_data": {"used": False}, "links": {"code": "https://github.com/zackschen/CoIN"}, "contact": "a@b.org"}


def cli(*args, ok=True):
    proc = subprocess.run([sys.executable, "-m", "cvit_bench", *map(str, args)], capture_output=True, text=True)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def coin_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("coin-e2e")
    spec = yaml.safe_load(open(load_benchmark("coin").source_file))
    for t in spec["tasks"].values():
        t["max_new_tokens"] = 4
    bench = root / "coin.yaml"
    bench.write_text(yaml.safe_dump(spec))
    raw = make_coin_files(root / "raw", "original", n=2)
    cli("prepare", "--benchmark", bench, "--templates", "original", "--source", "coin-files", "--raw-root", raw,
        "--image-root", raw / "images", "--out", root / "prep")
    return root, bench


@pytest.mark.slow
def test_coin_pipeline_from_the_cli(coin_env, tiny_llava_dir, tmp_path):
    root, bench = coin_env
    data = root / "prep" / "coin"
    run = tmp_path / "run"
    cli("train", "--method", "seq-lora", "--base-model", tiny_llava_dir, "--data", data, "--benchmark", bench,
        "--out", run, "--batch-size", 2, "--grad-accum", 1, "--lora-r", 4, "--max-steps-per-task", 1)
    assert [s["task"] for s in read_run(run).to_dict()["stages"]] == ORDER
    ev = tmp_path / "eval"
    proc = cli("evaluate", "--checkpoint", run, "--data", root / "prep", "--benchmark", bench, "--out", ev,
               "--batch-size", 4, "--num-workers", 0)
    assert "ACC (=AP)" in proc.stdout and "MAA (=MAP)" in proc.stdout
    results = json.loads((ev / "results.json").read_text())
    m = results["matrix"]
    assert m["tasks"] == ORDER and m["stages"] == [str(i) for i in range(1, 9)]
    assert m["metrics"] == ["mc_letter@llava", "vqa_soft@m4c", "substring@coin", "exact@gqa", "exact@upper",
                            "iou50@coin", "exact@upper", "exact@ocrvqa"]
    # lower triangle: 36 cells, the rest null
    assert sum(v is not None for row in m["values"] for v in row) == 36 and m["values"][0][1] is None
    # score the same predictions again: the same matrix
    sc = tmp_path / "score"
    cli("score", "--predictions", ev / "predictions", "--data", root / "prep", "--benchmark", bench, "--out", sc)
    assert json.loads((sc / "results.json").read_text())["matrix"]["values"] == m["values"]
    cli("report", ev / "results.json", "--out", tmp_path / "report")
    assert (tmp_path / "report" / "report.html").exists()

    # board: a re-scored CoIN entry beside the seeded published rows, and a General Knowledge table of its own
    meta = tmp_path / "meta.yaml"
    meta.write_text(yaml.safe_dump(META))
    board, site = tmp_path / "board", tmp_path / "site"
    cli("leaderboard", "pack", ev, "--meta", meta, "--out", tmp_path / "bundle.tar.gz")
    cli("leaderboard", "submit", tmp_path / "bundle.tar.gz", "--board", board, "--data", root / "prep")
    cli("leaderboard", "seed", "--board", board)
    judge = tmp_path / "judge"
    from cvit_bench.mini.tiny import build_tiny_chat_lm

    build_tiny_chat_lm(judge, seed=0)
    cli("leaderboard", "judge", "--board", board, "--predictions", ev / "predictions", "--data", root / "prep",
        "--meta", meta, "--judge", judge, "--device", "cpu")
    cli("leaderboard", "build", "--board", board, "--out", site)
    html = (site / "index.html").read_text()
    assert "coin · templates original · base model tiny-llava · profile compat" in html
    assert "general-knowledge gk_judge@coin" in html and ">ACC<" in html and ">MAA<" in html
    entries = [json.loads(p.read_text()) for p in (board / "submissions").glob("*.json")]
    gk = [e for e in entries if "general-knowledge" in e["board"]["variant"]]
    assert len(gk) == 1 and gk[0]["tier"] == "rescored" and gk[0]["tasks"] == ORDER
    # the judge track CLI on the same predictions reuses nothing from the board's cache but is reproducible
    out1, out2 = tmp_path / "gk1", tmp_path / "gk2"
    cli("judge", "--predictions", ev / "predictions", "--data", root / "prep", "--benchmark", bench,
        "--judge", judge, "--out", out1, "--device", "cpu")
    proc = cli("judge", "--predictions", ev / "predictions", "--data", root / "prep", "--benchmark", bench,
               "--judge", judge, "--out", out2, "--cache", out1 / "judgments.jsonl", "--device", "cpu")
    assert ", 0 asked" not in proc.stderr and "0 asked" in proc.stderr
    a, b = (json.loads((o / "judge.json").read_text()) for o in (out1, out2))
    assert a["matrix"] == b["matrix"] == gk[0]["results"]["matrix"]


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(set(method_names()) - {"zero-shot"}))
def test_every_method_trains_on_coin(method, coin_env, tiny_llava_dir, tmp_path):
    from cvit_bench.baselines.trainer import train_run

    root, bench = coin_env
    import dataclasses

    from cvit_bench.baselines import get_method

    # Small settings of the options a method has (MoE methods keep their own ranks; EProj few key steps).
    fields = {f.name for f in dataclasses.fields(get_method(method).config_cls)}
    small = {"lora_r": 4, "key_steps": 2} if method not in ("smolora", "branchlora", "moe-lora") else {}
    opts = {k: v for k, v in small.items() if k in fields}
    info = train_run(method, tiny_llava_dir, root / "prep" / "coin", tmp_path / "run", benchmark=str(bench),
                     tasks=["scienceqa", "grounding"], batch_size=2, grad_accum=1, max_steps_per_task=1,
                     warmup_steps=0, options=opts)
    assert info.trained
    assert read_run(tmp_path / "run").benchmark == "coin"


def test_projector_trained_as_in_coins_recipe(coin_env, tiny_llava_dir, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    from cvit_bench.baselines import load_for_eval
    from cvit_bench.baselines.trainer import train_run

    root, bench = coin_env
    train_run("seq-lora", tiny_llava_dir, root / "prep" / "coin", tmp_path / "run", benchmark=str(bench),
              tasks=["scienceqa"], batch_size=2, grad_accum=1, max_steps_per_task=2, warmup_steps=0, lr=1e-2,
              options={"lora_r": 4, "train_projector": True, "projector_lr": 1e-2})
    stage = tmp_path / "run" / "stage-01-scienceqa"
    weights = load_file(str(stage / "adapter_model.safetensors"))
    proj = {k: v for k, v in weights.items() if "multi_modal_projector" in k}
    assert proj and any("lora_" in k for k in weights)
    base = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir)
    before = base.model.multi_modal_projector.linear_1.weight.detach().clone()
    trained = next(v for k, v in proj.items() if k.endswith("linear_1.weight"))
    assert not torch.allclose(before, trained)                     # the projector moved
    tuned = load_for_eval(base, stage)
    assert not torch.allclose(before, tuned.base_model.model.model.multi_modal_projector.modules_to_save["default"].linear_1.weight)
