"""The evaluation runner on a tiny LLaVA (fp32, CPU): matrix shape, batch invariance, hot swap, resume,
several processes and bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cvit_bench.benchmark import load_benchmark
from cvit_bench.evaluation.checkpoints import checkpoint_sha256, load_run_dir, plan_from_paths
from cvit_bench.continual.metrics import AccuracyMatrix, summarize
from cvit_bench.errors import CvitError
from cvit_bench.data.prepare import prepare
from cvit_bench.evaluation.runner import EvalOptions, evaluate
from cvit_bench.mini.tiny import build_tiny_llava, make_lora_adapter
from cvit_fixtures import make_cvit_files

TASKS = ["scienceqa", "textvqa", "gqa"]


@pytest.fixture(scope="module")
def bench_yaml(tmp_path_factory) -> Path:
    """A 3-task cut of the cvit benchmark with short generations (the tiny random model rarely stops)."""
    data = yaml.safe_load(Path(load_benchmark("cvit").source_file).read_text())
    data["id"], data["upstream"] = "cvit-tiny3", TASKS
    data["downstream"] = [{"task": "vizwiz", "protocol": "zero-shot-final"}]
    data["tasks"] = {t: {**data["tasks"][t], "max_new_tokens": 4} for t in TASKS + ["vizwiz"]}
    path = tmp_path_factory.mktemp("bench") / "cvit-tiny3.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def prepared(bench_yaml, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runner-data")
    raw = make_cvit_files(root / "raw", "single", n=8)
    return prepare(str(bench_yaml), templates="single", source="cvit-files", raw_root=raw, out=root / "prep").folder


@pytest.fixture(scope="module")
def run_dir(tiny_llava_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    stages = []
    for i, task in enumerate(TASKS, 1):
        folder = f"stage-{i:02d}-{task}"
        make_lora_adapter(tiny_llava_dir, run / folder, seed=i, scale=3.0)
        stages.append({"index": i, "task": task, "path": folder, "sha256": checkpoint_sha256(run / folder)})
    (run / "run.json").write_text(json.dumps({
        "schema_version": 1, "benchmark": "cvit-tiny3", "template_set": "single", "base_model": str(tiny_llava_dir),
        "method": {"name": "seq-lora", "config": {}}, "stages": stages}))
    return run


def _evaluate(run_dir, prepared, bench_yaml, out, **opts):
    options = EvalOptions(**{"num_workers": 0, **opts})
    return evaluate(load_run_dir(run_dir), data=prepared, out=out, benchmark=str(bench_yaml), opts=options)


def _preds(out: Path) -> dict[str, list[dict]]:
    return {str(p.relative_to(out)): [json.loads(x) for x in p.read_text().splitlines()]
            for p in sorted((out / "predictions").rglob("*.jsonl"))}


@pytest.fixture(scope="module")
def baseline(run_dir, prepared, bench_yaml, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-b8")
    return out, _evaluate(run_dir, prepared, bench_yaml, out, batch_size=8)


def test_three_stage_run_gives_lower_triangle_and_scorer_summary(baseline):
    out, results = baseline
    m = results["matrix"]
    assert m["stages"] == ["1", "2", "3"] and m["tasks"] == TASKS
    assert [[v is not None for v in row] for row in m["values"]] == [[True, False, False], [True, True, False], [True, True, True]]
    final_if = [results["cells"][f"3/{t}"]["if_rate"] for t in TASKS]
    assert results["summary"] == summarize(AccuracyMatrix(m["tasks"], m["stages"], m["values"]), final_if)
    assert results["downstream"]["vizwiz"]["stage"] == "3" and results["downstream"]["vizwiz"]["n"] > 0
    assert results["generation"]["batch_size"] == 8 and results["generation"]["dtype"] == "float32"
    assert [s["checkpoint_sha256"][:8] for s in results["stages"]] == [s["sha256"][:8] for s in
                                                                      json.loads((Path(results["provenance"]["run"]) / "run.json").read_text())["stages"]]
    preds = _preds(out)
    assert set(preds) == {"predictions/1/scienceqa.jsonl", "predictions/2/scienceqa.jsonl", "predictions/2/textvqa.jsonl",
                          "predictions/3/scienceqa.jsonl", "predictions/3/textvqa.jsonl", "predictions/3/gqa.jsonl",
                          "predictions/3/vizwiz.jsonl"}
    assert len(preds["predictions/3/gqa.jsonl"]) == 8
    # Different adapters really produce different text somewhere (the test would be vacuous otherwise).
    texts = {k: [x["prediction"] for x in v] for k, v in preds.items()}
    assert texts["predictions/1/scienceqa.jsonl"] != texts["predictions/3/scienceqa.jsonl"]
    assert (out / "scores" / "3" / "gqa.jsonl").is_file()


def test_score_of_the_runs_predictions_gives_the_runs_numbers(baseline, prepared, bench_yaml, tmp_path):
    """One scoring path: ``cvit-bench score`` on evaluate's prediction files writes the same score files and
    the same cells, matrix and summary as evaluate did."""
    from cvit_bench.scoring.pipeline import score_directory

    out, results = baseline
    rescored = score_directory(out / "predictions", prepared, benchmark=str(bench_yaml), profile="compat",
                               out=tmp_path)
    for key in ("matrix", "if_rates", "cells", "summary", "downstream", "warnings"):
        assert rescored[key] == results[key], key
    ours = sorted(p.relative_to(out) for p in (out / "scores").rglob("*.jsonl"))
    assert ours and ours == sorted(p.relative_to(tmp_path) for p in (tmp_path / "scores").rglob("*.jsonl"))
    assert all((out / p).read_bytes() == (tmp_path / p).read_bytes() for p in ours)


@pytest.mark.slow
def test_batch_size_does_not_change_predictions(baseline, run_dir, prepared, bench_yaml, tmp_path):
    out8, _ = baseline
    _evaluate(run_dir, prepared, bench_yaml, tmp_path, batch_size=1)
    assert _preds(tmp_path) == _preds(out8)


def test_hot_swap_equals_a_fresh_load_of_each_adapter(baseline, run_dir, prepared, bench_yaml, tmp_path):
    out8, _ = baseline
    spec = load_benchmark(str(bench_yaml))
    for i, task in enumerate(TASKS[:2], 1):
        adapter = run_dir / f"stage-{i:02d}-{task}"
        plan = plan_from_paths([str(adapter)], [task], spec)
        plan.base_model = json.loads((run_dir / "run.json").read_text())["base_model"]
        out = tmp_path / f"fresh{i}"
        evaluate(plan, data=prepared, out=out, benchmark=str(bench_yaml), opts=EvalOptions(num_workers=0, allow_partial=True,
                 downstream=False))
        fresh = [x["prediction"] for x in _preds(out)[f"predictions/1/{task}.jsonl"]]
        swapped = [x["prediction"] for x in _preds(out8)[f"predictions/{i}/{task}.jsonl"]]
        assert fresh == swapped


def test_resume_after_interrupt_generates_nothing_twice(baseline, run_dir, prepared, bench_yaml, tmp_path, monkeypatch):
    out8, results8 = baseline
    from cvit_bench.backends.hf import HFBackend

    real = HFBackend.generate
    seen: list[str] = []
    state = {"calls": 0, "fail_at": 4}

    def counting(self, requests, images):
        state["calls"] += 1
        if state["calls"] == state["fail_at"]:
            raise KeyboardInterrupt
        seen.extend(r.uid for r in requests)
        return real(self, requests, images)

    monkeypatch.setattr(HFBackend, "generate", counting)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(run_dir, prepared, bench_yaml, tmp_path, batch_size=3)
    partial = list((tmp_path / "predictions").rglob("*.jsonl"))
    assert partial, "work finished before the interrupt must be kept"
    # A truncated last line (the process died mid-write) is tolerated.
    with open(partial[-1], "a") as fh:
        fh.write('{"uid": "scienceqa/te')
    state["fail_at"] = -1
    results = _evaluate(run_dir, prepared, bench_yaml, tmp_path, batch_size=3)
    per_cell = {}
    for uid in seen:
        per_cell[uid] = per_cell.get(uid, 0) + 1
    total_requests = sum(len(v) for v in _preds(out8).values())
    assert len(seen) == total_requests            # every sample generated exactly once over both runs
    assert _preds(tmp_path) == _preds(out8)
    assert results["matrix"] == results8["matrix"] and results["summary"] == results8["summary"]


def test_provenance_is_collected_once_per_run(baseline, run_dir, prepared, bench_yaml, tmp_path, monkeypatch):
    """results.json is rewritten after each of the 7 cells; the git commit in it is asked for once."""
    import shutil

    real_git, calls = shutil.which("git"), tmp_path / "git-calls"
    shim = tmp_path / "bin" / "git"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexec "{real_git}" "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    results = _evaluate(run_dir, prepared, bench_yaml, tmp_path / "out", batch_size=8)
    assert len(results["cells"]) == 7 and calls.read_text().splitlines() == ["rev-parse HEAD"]
    assert results["provenance"]["git_commit"] == baseline[1]["provenance"]["git_commit"]


def test_rerun_with_other_checkpoint_refuses_to_mix(baseline, run_dir, prepared, bench_yaml, tmp_path, tiny_llava_dir):
    import shutil

    out8, _ = baseline
    shutil.copytree(out8, tmp_path / "out")
    other = tmp_path / "run"
    shutil.copytree(run_dir, other)
    make_lora_adapter(tiny_llava_dir, other / "stage-01-scienceqa", seed=99, scale=3.0)
    run = json.loads((other / "run.json").read_text())
    run["stages"][0]["sha256"] = checkpoint_sha256(other / "stage-01-scienceqa")
    (other / "run.json").write_text(json.dumps(run))
    with pytest.raises(CvitError, match="fingerprint"):
        _evaluate(other, prepared, bench_yaml, tmp_path / "out")


def test_zero_shot_row_and_full_schedule_enable_fwt(run_dir, prepared, bench_yaml, tmp_path):
    results = _evaluate(run_dir, prepared, bench_yaml, tmp_path, schedule="full", zero_shot=True, downstream=False)
    assert results["matrix"]["stages"] == ["0", "1", "2", "3"]
    assert all(v is not None for row in results["matrix"]["values"] for v in row)
    assert results["summary"]["FWT"] is not None


def test_bad_checkpoints_are_named(run_dir, prepared, bench_yaml, tmp_path):
    import shutil

    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    shutil.rmtree(broken / "stage-02-textvqa")
    with pytest.raises(CvitError, match="stage-02-textvqa.*not an adapter"):
        load_run_dir(broken)
    spec = load_benchmark(str(bench_yaml))
    with pytest.raises(CvitError, match="--allow-partial"):
        plan = plan_from_paths([str(run_dir / "stage-01-scienceqa")], ["gqa"], spec)
        plan.base_model = "x"
        evaluate(plan, data=prepared, out=tmp_path / "o", benchmark=str(bench_yaml), opts=EvalOptions(num_workers=0))


def test_adapter_for_another_base_names_both(run_dir, prepared, bench_yaml, tmp_path):
    other_base = build_tiny_llava(tmp_path / "wide", seed=0, text_hidden=96, text_heads=4, text_kv_heads=2)
    plan = load_run_dir(run_dir)
    with pytest.raises(CvitError) as exc:
        evaluate(plan, data=prepared, out=tmp_path / "o", benchmark=str(bench_yaml), base_model=str(other_base),
                 opts=EvalOptions(num_workers=0))
    assert "stage-01-scienceqa" in str(exc.value) and str(other_base) in str(exc.value)


@pytest.mark.slow
def test_two_processes_equal_one(baseline, run_dir, prepared, bench_yaml, tmp_path):
    out8, results8 = baseline
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "cvit_bench", "evaluate", "--checkpoint", str(run_dir), "--data", str(prepared.parent),
           "--benchmark", str(bench_yaml), "--out", str(tmp_path), "--batch-size", "8", "--num-workers", "0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert _preds(tmp_path) == _preds(out8)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["matrix"] == results8["matrix"] and results["generation"]["processes"] == 2
    assert not list((tmp_path / "predictions").rglob("*shard*"))


def test_undecodable_image_is_recorded_not_fatal(run_dir, bench_yaml, tmp_path):
    raw = make_cvit_files(tmp_path / "raw", "single", n=8)
    folder = prepare(str(bench_yaml), templates="single", source="cvit-files", raw_root=raw, out=tmp_path / "prep",
                     tasks=["scienceqa"]).folder
    (raw / "images/scienceqa/test/102/image.png").write_bytes(b"not an image at all")
    results = evaluate(load_run_dir(run_dir), data=folder, out=tmp_path / "out", benchmark=str(bench_yaml),
                       opts=EvalOptions(num_workers=1, allow_partial=True))
    lines = [json.loads(x) for x in (tmp_path / "out/predictions/1/scienceqa.jsonl").read_text().splitlines()]
    bad = [x for x in lines if x.get("error")]
    assert [x["uid"] for x in bad] == ["scienceqa/test/102"] and "image.png" in bad[0]["error"]
    assert len(lines) == 8 and results["cells"]["1/scienceqa"]["n"] == 8
    assert any("scienceqa/test/102" in w for w in results["warnings"])


def test_failed_images_are_retried_and_a_no_op_resume_keeps_the_batch_size(run_dir, bench_yaml, tmp_path):
    raw = make_cvit_files(tmp_path / "raw", "single", n=8)
    folder = prepare(str(bench_yaml), templates="single", source="cvit-files", raw_root=raw, out=tmp_path / "prep",
                     tasks=["scienceqa"]).folder
    image = raw / "images/scienceqa/test/102/image.png"
    good = image.read_bytes()
    image.write_bytes(b"not an image at all")

    def run():
        return evaluate(load_run_dir(run_dir), data=folder, out=tmp_path / "out", benchmark=str(bench_yaml),
                        opts=EvalOptions(num_workers=0, allow_partial=True, batch_size=4))

    first = run()
    assert any("scienceqa/test/102" in w for w in first["warnings"])
    image.write_bytes(good)                        # the image is fixed: its sample is generated, not kept failed
    second = run()
    lines = [json.loads(x) for x in (tmp_path / "out/predictions/1/scienceqa.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and not [x for x in lines if x.get("error")]
    assert not any("scienceqa/test/102" in w for w in second["warnings"])
    third = run()                                  # nothing left to generate
    assert third["generation"]["batch_size"] == second["generation"]["batch_size"] == 4
    assert third["matrix"] == second["matrix"]


@pytest.mark.parametrize("method", ["multitask", "dir-lora", "zero-shot"])
def test_trained_reference_runs_evaluate_with_their_semantics(method, tiny_llava_dir, prepared, bench_yaml, tmp_path):
    from cvit_bench.baselines.trainer import train_run

    train_run(method, tiny_llava_dir, prepared, tmp_path / "run", benchmark=str(bench_yaml), tasks=TASKS,
              max_steps_per_task=2, batch_size=4, grad_accum=1, lr=5e-3, options={"lora_r": 4} if method != "zero-shot" else {})
    results = _evaluate(tmp_path / "run", prepared, bench_yaml, tmp_path / "eval", downstream=False)
    m = results["matrix"]
    if method == "multitask":
        assert m["stages"] == ["1", "2", "3"] and m["values"][:2] == [[None] * 3, [None] * 3]
        assert all(v is not None for v in m["values"][2])
        assert results["summary"]["AP"] is not None and results["summary"]["BWT"] is None
    elif method == "dir-lora":
        assert results["summary"]["BWT"] == 0.0 and results["summary"]["forgetting_max"] == 0.0
        final = _preds(tmp_path / "eval")
        assert final["predictions/3/scienceqa.jsonl"] == final["predictions/1/scienceqa.jsonl"]
    else:
        assert m["stages"] == ["0"] and all(v is not None for v in m["values"][0])
        assert results["summary"]["AP"] is None


@pytest.mark.slow
def test_evaluation_never_imports_training_code_or_task_loaders(run_dir, prepared, bench_yaml, tmp_path):
    """A user evaluating checkpoints trained elsewhere needs neither the trainer nor the dataset loaders."""
    script = (
        "import sys\n"
        "from cvit_bench.evaluation.checkpoints import load_run_dir\n"
        "from cvit_bench.evaluation.runner import EvalOptions, evaluate\n"
        f"evaluate(load_run_dir({str(run_dir)!r}), data={str(prepared.parent)!r}, out={str(tmp_path / 'out')!r},\n"
        f"         benchmark={str(bench_yaml)!r}, opts=EvalOptions(num_workers=0, limit=2, downstream=False),\n"
        "         )\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('cvit_bench.baselines', 'cvit_bench.tasks.')))\n"
        "print('LOADED', bad)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOADED []" in proc.stdout
    assert json.loads((tmp_path / "out" / "results.json").read_text())["matrix"]["tasks"] == TASKS


def test_every_file_evaluate_writes_validates_against_its_published_schema(baseline, prepared):
    from cvit_bench.formats.schemas import validator

    out, _ = baseline
    checks = [(out / "results.json", "results"), (prepared / "manifest.json", "manifest")]
    for path, name in checks:
        doc = json.loads(path.read_text())
        assert doc["schema_version"] == 1 and validator(name).is_valid(doc), path
    for folder, name in (("predictions", "prediction-line"), ("scores", "score-line")):
        files = sorted((out / folder).glob("*/*.jsonl"))
        assert files
        for path in files:
            for line in path.read_text().splitlines():
                obj = json.loads(line)
                assert obj["schema_version"] == 1 and validator(name).is_valid(obj), (path, line)
