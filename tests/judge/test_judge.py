"""General Knowledge judge: CoIN's prompt, its reply parser (quirks), the aggregation, and the judgment cache
(a rerun and a run after a crash never ask twice) — with a tiny judge built in-process, not its wisdom."""
from __future__ import annotations

import json
import math

import pytest

from coin_fixtures import make_coin_files
from cvit_bench.errors import CvitError
from cvit_bench.judge.run import JudgmentCache, run_judge
from cvit_bench.judge.rules import RULES, ReplyCrash, aggregate, judge_item, judge_prompt, parse_coin, parse_robust
from cvit_bench.data.prepare import prepare
from cvit_bench.formats.sample import read_samples

TASKS = ["scienceqa", "grounding", "ocrvqa"]


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    from cvit_bench.mini.tiny import build_tiny_chat_lm

    return build_tiny_chat_lm(tmp_path_factory.mktemp("judge") / "model", seed=0)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("coin-judge")
    raw = make_coin_files(root / "raw", "original", n=3)
    return prepare("coin", templates="original", source="coin-files", raw_root=raw, image_root=raw / "images",
                   out=root / "prep", tasks=TASKS).folder


@pytest.mark.parametrize("reply, expected", [
    ("8", 8.0), (" 10\n", 10.0), ("10/10", 10.0), ("8/10", 8.0), ("Score: 8/10", None),   # '/' branch: head must be digits
    ("Score: 10", 1.0), ("7.5 out of 10", 7.0), ("Rating: 0", None), ("0", 0.0), ("11", None),
    ("-3", -3.0), ("nan", None), ("１０/10", 10.0), ("", None), ("I would say 4", 4.0),
])
def test_coin_parser_quirks(reply, expected):
    assert parse_coin(reply) == expected


@pytest.mark.parametrize("reply", ["²/10", "⑧/10", "½/10"])
def test_coin_replies_the_script_crashes_on_refuse_the_cell(reply):
    # '²'.isnumeric() is True but float('²') raises inside evaluate_score.py's except: no number, not a 0
    with pytest.raises(ReplyCrash, match="float"):
        parse_coin(reply)
    cell = aggregate("gk_judge@coin", ["8", reply, "7"])
    assert cell.value is None and "reply 2" in cell.refused and "ValueError" in cell.refused
    assert aggregate("gk_judge@robust", ["8", reply, "7"]).refused is None    # standard reads the first number


def test_coin_cells_the_script_cannot_round_or_divide_are_refused():
    assert "OverflowError" in aggregate("gk_judge@coin", ["8", "-inf"]).refused
    assert "ZeroDivisionError" in aggregate("gk_judge@coin", []).refused
    assert aggregate("gk_judge@coin", ["8", "nan"]).refused is None            # nan <= 10 is False: not counted


@pytest.mark.parametrize("reply, expected", [("Score: 10", 10.0), ("8/10", 8.0), ("7.5 out of 10", 7.5),
                                             ("11", None), ("none", None), ("-3", 3.0)])
def test_robust_parser(reply, expected):
    assert parse_robust(reply) == expected


def test_aggregation_rounds_like_python():
    # round(100 * sum / (10 N)), half to even: 12.5 -> 12, 17.5 -> 18
    assert aggregate("gk_judge@coin", ["5", "0", "0", "0"]).value == 12.0
    assert aggregate("gk_judge@coin", ["7", "0", "0", "0"]).value == 18.0
    cell = aggregate("gk_judge@coin", ["8", "Score: 10", "x", "-3"])        # 8 + 1 + 0 - 3 = 6 over 40
    assert (cell.value, cell.total, cell.n_unparsed) == (15.0, 6.0, 1)
    assert aggregate("gk_judge@robust", ["Score: 10", None, "7.5"]).value == pytest.approx(100 * 17.5 / 30)
    assert aggregate("gk_judge@coin", ["-inf"]).value is None and aggregate("gk_judge@coin", []).value is None


def test_prompt_is_coins(prepared):
    sqa = read_samples(prepared / "scienceqa" / "test.parquet")[0]
    item = judge_item(sqa, "A", "multiple_choice")
    # the question is the text without its last line; '<image>' removed from the whole prompt, then stripped
    assert judge_prompt(item) == (
        "[Context]\n[Question]\n\nWhich color is item 0?\nA. red\nB. green\n\n[Ground truth answer]\nA\n\n"
        "[End of ground truth answer]\n\n[Assistant]\nA\n\n[End of Assistant]\n\n[System]\n" + RULES["CoIN"])
    ground = read_samples(prepared / "grounding" / "test.parquet")[0]
    item = judge_item(ground, "[0.1, 0.2, 0.3, 0.4]", "grounding")
    assert item.rule == "CoIN_Grounding" and item.reference == "[0.10, 0.35, 0.50, 0.55]"
    assert judge_prompt(item).startswith("[Context]\n[Question]\nthe red thing on the left\nPlease provide the "
                                         "bounding box coordinate of the region this sentence describes.\n\n")
    assert "(x1, y1, x2, y2)" in judge_prompt(item)


def _predictions(root):
    lines = {"scienceqa": [("100", "A"), ("101", "C"), ("102", "The answer is A")],
             "grounding": [("ref-0", "[0.1, 0.35, 0.5, 0.55]"), ("ref-1", "none"), ("unknown-id", "x")],
             "ocrvqa": [("761183272_0", "Book Title 0"), ("761183272_1", "a book"), ("761183272_2", "Book Title 0")]}
    for stage in ("1", "2"):
        for task, recs in lines.items():
            if stage == "1" and task != "scienceqa":
                continue
            path = root / stage / f"{task}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"question_id": q, "text": t}) + "\n" for q, t in recs))
    return root


def test_judge_run_cache_and_crash_resume(prepared, judge_dir, tmp_path):
    preds = _predictions(tmp_path / "preds")
    out = tmp_path / "gk"

    class Crash(Exception):
        pass

    def crash(done):
        raise Crash

    with pytest.raises(Crash):
        run_judge(preds, prepared.parent, judge_model=str(judge_dir), out=out, batch_size=2, after_batch=crash)
    cache = JudgmentCache(out / "judgments.jsonl")
    assert len(cache.replies) == 2                                  # the first batch was kept
    # unique (question, prediction, reference) prompts: scienceqa 3 + grounding 2 (unknown id skipped) + ocrvqa 3
    first = run_judge(preds, prepared.parent, judge_model=str(judge_dir), out=out, batch_size=2)
    assert (first.n_asked, first.n_cached) == (6, 2)
    again = run_judge(preds, prepared.parent, judge_model=str(judge_dir), out=out, batch_size=2)
    assert (again.n_asked, again.n_cached) == (0, 8) and again.results["matrix"] == first.results["matrix"]
    lines = (out / "judgments.jsonl").read_text().splitlines()
    assert len(lines) == 8                                          # append-only, nothing asked twice

    r = first.results
    assert r["kind"] == "general-knowledge" and r["metric"] == "gk_judge@coin"
    assert r["matrix"]["stages"] == ["1", "2"] and r["matrix"]["tasks"][0] == "scienceqa"
    assert r["cells"]["2/grounding"]["join"]["n_unknown"] == 1 and r["cells"]["2/grounding"]["n"] == 2
    # each cell equals CoIN's aggregation of the stored replies (recomputed here from the per-sample files)
    for key, cell in r["cells"].items():
        stage, task = key.split("/")
        per = [json.loads(x) for x in (out / "judgments" / stage / f"{task}.jsonl").read_text().splitlines()]
        total = sum(0.0 if parse_coin(p["reply"]) is None else parse_coin(p["reply"]) for p in per)
        assert cell["value"] == round(100.0 * total / (10 * len(per)))
        assert math.isfinite(cell["sum"])
    assert r["summary"]["AP"] is None                               # 8 tasks, only 3 judged: ACC not computable
    assert r["summary_names"]["AP"] == "ACC"

    # a crash mid-write leaves a partial line: ignored on read, repaired on the next append
    with open(out / "judgments.jsonl", "a") as f:
        f.write('{"schema_version": 1, "key": "abc", "rep')
    (out / "judgments" / "2" / "ocrvqa.jsonl").unlink()
    third = run_judge(preds, prepared.parent, judge_model=str(judge_dir), out=out, batch_size=2)
    assert third.n_asked == 0 and (out / "judgments" / "2" / "ocrvqa.jsonl").exists()


def test_another_judge_or_settings_ask_again(prepared, judge_dir, tmp_path):
    from cvit_bench.judge.run import JudgeSettings
    from cvit_bench.mini.tiny import build_tiny_chat_lm

    preds = _predictions(tmp_path / "preds")
    cache = tmp_path / "shared.jsonl"
    a = run_judge(preds, prepared.parent, judge_model=str(judge_dir), out=tmp_path / "a", cache=cache,
                  tasks=["scienceqa"])
    other = build_tiny_chat_lm(tmp_path / "other", seed=1)
    b = run_judge(preds, prepared.parent, judge_model=str(other), out=tmp_path / "b", cache=cache, tasks=["scienceqa"])
    c = run_judge(preds, prepared.parent, judge_model=str(judge_dir), out=tmp_path / "c", cache=cache,
                  tasks=["scienceqa"], settings=JudgeSettings(sampling="coin", seed=0))
    assert (a.n_asked, b.n_asked, c.n_asked) == (3, 3, 3)
    assert a.results["judge"]["model_sha256"] != b.results["judge"]["model_sha256"]
    d = run_judge(preds, prepared.parent, judge_model=str(judge_dir), out=tmp_path / "d", cache=cache,
                  tasks=["scienceqa"], profile="standard")
    assert d.n_asked == 0 and d.results["metric"] == "gk_judge@robust"   # parsers re-read stored replies


@pytest.mark.slow
def test_cli_judge_and_errors(prepared, judge_dir, tmp_path):
    import subprocess
    import sys

    preds = _predictions(tmp_path / "preds")
    cmd = [sys.executable, "-m", "cvit_bench", "judge", "--predictions", str(preds), "--data", str(prepared.parent),
           "--judge", str(judge_dir), "--out", str(tmp_path / "gk"), "--tasks", "ocrvqa"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "judgments: 3 asked, 0 from the cache" in proc.stderr and (tmp_path / "gk" / "judge.json").exists()
    proc = subprocess.run(cmd[:-4] + ["--judge", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no-such-model" in proc.stderr
    with pytest.raises(CvitError, match="batch size"):
        run_judge(preds, prepared.parent, judge_model=str(judge_dir), out=tmp_path / "y", batch_size=0)
