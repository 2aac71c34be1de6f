"""Agreement of ``score --profile compat`` with the unmodified reference scorers, per task and scenario.

Runs the SMoLoRA scripts (``llava/eval/SMoLoRA/Eval/*.py``, ``llava/eval/m4c_evaluator.py``, the IF scripts,
``scripts/convert_gqa_for_eval.py``) and, with ``--coin``, the CoIN copies (``ETrain/Eval/LLaVA/CoIN/*.py``) in this
process, on the adversarial scenarios of ``tests/scoring/test_compat_reference.py`` (clean, shuffled, ~10 % missing, a
duplicated id with another text, unknown ids, ids re-typed to str / int, caption string answers), and compares
each aggregate and IF rate with :func:`cvit_bench.scoring.pipeline.score_cell`. A reference crash must be a compat refusal;
for ImageNet/Places365 compat refuses misaligned files on purpose (the reference's number means nothing there).
Files the scripts cannot read (a blank line at the end or in the middle, a UTF-8 BOM), a line without ``text`` and a
``prompt: null`` field run for every task. With ``--coin`` also: Grounding (``eval_grounding.py``: a leading space, null / numeric /
unparsable texts, a repeated eval-file id), ImageNet with only the last chunk lost, TextVQA/GQA lines naming an
official id CoIN's file lacks, and General Knowledge replies read by ``ETrain/Eval/evaluate_score.py``.

    git --git-dir=<mirror of Minato-Zackie/SMoLoRA> archive HEAD llava scripts | tar x -C /tmp/smolora
    git --git-dir=<mirror of zackschen/CoIN> archive HEAD ETrain/Eval scripts | tar x -C /tmp/coin
    python bench/compat_agreement.py --smolora /tmp/smolora [--coin /tmp/coin]

Not a test: it needs the reference checkouts (and pycocoevalcap-free: the scripts ship their own CIDEr copy).
The scripts are read as they are: where one hard-codes an absolute data path (SMoLoRA ``eval_gqa.py``), the path
is redirected to the scenario's file while it runs.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import runpy
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "scoring"), str(ROOT / "tests")]

import test_compat_reference as T  # noqa: E402  (the scenarios' builders)

WORK = Path(tempfile.mkdtemp(prefix="compat-agreement-"))


def _file(obj, suffix=".json") -> Path:
    path = WORK / f"f{len(list(WORK.iterdir()))}{suffix}"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def _jsonl(lines) -> Path:
    """A prediction file: the lines as JSONL, or (a str) the file's exact text (blank lines, a BOM)."""
    return _file(lines if isinstance(lines, str) else "".join(json.dumps(x) + "\n" for x in lines), ".jsonl")


def run_script(path: Path, argv: list[str], capture: tuple[str, ...] = (), cwd: Path | None = None,
               redirect: tuple[str, str] | None = None):
    """Run a reference script as ``__main__``; returns its globals and the locals/returns of ``capture`` functions."""
    got: dict[str, list] = {}

    def profiler(frame, event, arg):
        if event == "return" and frame.f_code.co_name in capture:
            got.setdefault(frame.f_code.co_name, []).append((dict(frame.f_locals), arg))

    old_argv, old_cwd, old_join, old_path = sys.argv, os.getcwd(), os.path.join, list(sys.path)
    sys.argv = [str(path)] + argv
    sys.path.insert(0, str(path.parent))
    if redirect:
        os.path.join = lambda a, *p: old_join(redirect[1] if a == redirect[0] else a, *p)
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            sys.setprofile(profiler)
            try:
                g = runpy.run_path(str(path), run_name="__main__")
            finally:
                sys.setprofile(None)
    except BaseException as e:  # the reference crashing is a result here
        return {"crash": f"{type(e).__name__}: {e}"}
    finally:
        sys.argv, os.path.join, sys.path[:] = old_argv, old_join, old_path
        os.chdir(old_cwd)
    return {"g": g, "got": got}


def _raw(s):
    return int(s.source_id) if s.meta.get("question_id_type") == "int" else s.source_id


def _eval_file(samples, caption=False):
    return _file([{"question_id": _raw(s), "answer": (s.references[0] if s.meta.get("answer_is_string") else list(s.references))
                   if caption else s.target} for s in samples])


def _load_as(name: str, path: Path) -> None:
    import importlib.util
    import types

    parts = name.split(".")
    for i in range(1, len(parts)):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module


class Reference:
    def __init__(self, smolora: Path, coin: Path | None):
        self.s = smolora / "llava/eval/SMoLoRA/Eval"
        self.c = coin / "ETrain/Eval/LLaVA/CoIN" if coin else None
        self.gqa_convert = smolora / "scripts/convert_gqa_for_eval.py"
        # The scripts import the m4c evaluator through their packages (`llava.eval.m4c_evaluator`,
        # `ETrain.Eval.LLaVA.CoIN.m4c_evaluator`), whose __init__ files pull in the training stack: load the
        # evaluator module itself under those names instead.
        _load_as("llava.eval.m4c_evaluator", smolora / "llava/eval/m4c_evaluator.py")
        if coin:
            _load_as("ETrain.Eval.LLaVA.CoIN.m4c_evaluator", self.c / "m4c_evaluator.py")

    def exact(self, variant, script, samples, lines):
        base = self.s if variant == "smolora" else self.c
        r = run_script(base / script, ["--annotation-file", str(_eval_file(samples)), "--result-file", str(_jsonl(lines)),
                                       "--output-dir", str(WORK)], ("eval_single",))
        return r.get("crash") or 100.0 * r["got"]["eval_single"][0][0]["right"] / r["got"]["eval_single"][0][0]["total"]

    def textvqa(self, variant, samples, lines, official=()):
        base = self.s if variant == "smolora" else self.c
        ann = _file({"data": [{"question_id": int(s.source_id), "answers": s.references} for s in samples]
                             + [{"question_id": int(e["id"]), "answers": e["references"]} for e in official]})
        r = run_script(base / "eval_textvqa.py", ["--annotation-file", str(ann), "--result-file", str(_jsonl(lines))],
                       ("eval_pred_list",))
        return r.get("crash") or 100.0 * r["got"]["eval_pred_list"][0][1]

    def imagenet(self, variant, samples, lines):
        base = self.s if variant == "smolora" else self.c
        ev = _file([{"answer": s.target} for s in samples])
        r = run_script(base / "eval_ImagetNet.py", ["--test-file", str(ev), "--result-file", str(_jsonl(lines)),
                                                    "--output-dir", str(WORK)], ("eval_single",))
        return r.get("crash") or 100.0 * r["got"]["eval_single"][0][0]["right"] / r["got"]["eval_single"][0][0]["total"]

    def gqa(self, variant, samples, lines, official=()):
        base = self.s if variant == "smolora" else self.c
        d = WORK / f"gqa{len(list(WORK.iterdir()))}"
        (d / "cl_dataset/GQA").mkdir(parents=True)
        entries = [(s.source_id, s.references[0], s.meta) for s in samples] + [(e["id"], e["references"][0], e["meta"])
                                                                              for e in official]
        questions = {qid: {"answer": answer, "isBalanced": meta.get("is_balanced", True), "question": "q",
                           "semantic": [], "types": {"structural": meta.get("structural"), "semantic": "obj",
                                                     "detailed": "x"}, "groups": {"global": meta.get("global_group", "g")}}
                     for qid, answer, meta in entries}
        (d / "cl_dataset/GQA/testdev_balanced_questions.json").write_text(json.dumps(questions))
        conv = run_script(self.gqa_convert, ["--src", str(_jsonl(lines)), "--dst", str(d / "testdev_balanced_predictions.json")])
        if "crash" in conv:
            return conv["crash"]
        r = run_script(base / "eval_gqa.py", ["--tier", "testdev_balanced", "--path", str(d)], cwd=d,
                       redirect=("/data/zqwang/moe_cl_data/dataset/GQA", str(d / "cl_dataset/GQA")))
        return r.get("crash") or r["g"]["scores"]["accuracy"]

    def grounding(self, records, lines):
        """CoIN eval_grounding.py on a test file of ``records`` ({question_id, answer_bbox, size}, repeats kept)."""
        r = run_script(self.c / "eval_grounding.py", ["--test-file", str(_file(records)), "--result-file", str(_jsonl(lines))],
                       ("eval_single",))
        return r.get("crash") or 100.0 * r["got"]["eval_single"][0][0]["right"] / r["got"]["eval_single"][0][0]["total"]

    def general_knowledge(self, replies):
        """CoIN ETrain/Eval/evaluate_score.py on the judge's replies; its printed 'Final score:N'."""
        d = WORK / f"gk{len(list(WORK.iterdir()))}"
        d.mkdir()
        (d / "prompt_eval_merge.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in replies))
        r = run_script(self.c.parents[1] / "evaluate_score.py", ["--dir", str(d)])
        return r.get("crash") or float((d / "Prompt_Result.text").read_text().split(":")[1])

    def cider(self, script, samples, lines):
        r = run_script(self.s / script, ["--annotation-file", str(_eval_file(samples, caption=True)),
                                         "--result-file", str(_jsonl(lines))], ("compute_score",))
        return r.get("crash") or 100.0 * float(r["got"]["compute_score"][-1][1][0])

    def scienceqa(self, variant, samples, lines, extra):
        base = self.s if variant == "smolora" else self.c
        problems = {s.source_id: {"choices": s.choices, "answer": "ABCDE".index(s.references[0])} for s in samples}
        problems.update({p["id"]: {"choices": [""] * p["n_choices"], "answer": "ABCDE".index(p["gold"])} for p in extra})
        d = WORK / f"sqa{len(list(WORK.iterdir()))}"
        d.mkdir()
        (d / "problems.json").write_text(json.dumps(problems))
        (d / "pid_splits.json").write_text(json.dumps({"test": [s.source_id for s in samples] + [p["id"] for p in extra]}))
        pf = _jsonl(lines)
        r = run_script(base / "eval_science_qa.py", ["--base-dir", str(d), "--result-file", str(pf), "--output-file",
                                                     str(WORK / "a"), "--output-result", str(WORK / "b")])
        return (r.get("crash") or r["g"]["sqa_results"]["acc"]), d

    def if_rate(self, script, samples, lines, caption=False, base_dir=None):
        args = (["--base-dir", str(base_dir)] if base_dir else ["--annotation-file", str(_eval_file(samples, caption))])
        r = run_script(self.s / script, args + ["--result-file", str(_jsonl(lines)), "--output-file", str(WORK / "o")])
        return r.get("crash") or r["g"]["accuracy"]


def scenarios(samples, texts, **extra):
    lines = T._lines(samples, texts, **extra)
    raw = "".join(json.dumps(x) + "\n" for x in lines)
    return {"clean": lines, "shuffled": T._shuffled(lines),
            "missing": [x for i, x in enumerate(lines) if i not in (1, 3)],
            "duplicate": lines + [dict(lines[0], text="zzz")],
            "unknown": lines + [dict(lines[0], question_id=987650 + k, text="an unknown text here") for k in range(3)],
            "ids-as-str": T._lines(samples, texts, retype=lambda i, q: str(q), **extra),
            "ids-as-int": T._lines(samples, texts, retype=lambda i, q: int(q) if str(q).isdigit() else q, **extra),
            "blank-line-at-end": raw + "\n", "blank-line-inside": raw.replace("\n", "\n\n", 2).replace("\n\n", "\n", 1),
            "utf8-bom": "\ufeff" + raw, "prompt-null": [dict(x, prompt=None) for x in lines],
            "text-missing": [{k: v for k, v in x.items() if k != "text" or i != 1} for i, x in enumerate(lines)]}


def coin_only(ref, rows, ours) -> None:
    """The CoIN scenarios of issue 25: Grounding, ImageNet's lost last chunk, official TextVQA/GQA ids outside the
    eval file, a repeated eval-file id, General Knowledge replies (CoIN has no IF track: aggregates only)."""
    from types import SimpleNamespace

    from cvit_bench.benchmark import load_benchmark
    from cvit_bench.judge.rules import aggregate
    from cvit_bench.tasks.coin_files import last_record_wins

    coin = load_benchmark("coin")
    s = T._grounding(8)
    boxes = ["[0.10, 0.20, 0.50, 0.60]", " [0.10, 0.20, 0.50, 0.60]", "[0.12, 0.22, 0.52, 0.58]", "[0.6, 0.6, 0.9, 0.9]",
             "  [0.10, 0.20, 0.50, 0.60]", "[0.10,0.20,0.50,0.60]", " [10.03, 0.20, 0.50, 0.60]", "0.10, 0.20, 0.50, 0.60"]
    records = [{"question_id": _raw(x), "answer_bbox": x.meta["answer_bbox"], "size": x.meta["size"]} for x in s]
    odd = {"leading-space": " [0.10, 0.20, 0.50, 0.60]", "null-text": None, "number-text": 7, "list-text": [0.1, 0.2, 0.5, 0.6],
           "unparsable-text": "the box is top left", "nan-text": "[nan, 0.2, 0.5, 0.6]"}
    grounding = dict(scenarios(s, boxes))
    for k, text in odd.items():
        grounding[k] = [dict(x, text=text) if i % 2 else x for i, x in enumerate(grounding["clean"])]
    for k, lines in grounding.items():
        compare(rows, f"grounding@coin/{k}", T._cell(ours.tmp, "grounding", s, [] if isinstance(lines, str) else lines,
                                                     spec=coin, raw=lines if isinstance(lines, str) else None),
                ref.grounding(records, lines))
    # a repeated eval-file id: the reference's dict keeps the last record; prepare collapses the same way
    repeat = dict(records[0], answer_bbox="[0.00, 0.00, 0.30, 0.30]")
    ns = SimpleNamespace(notes={})
    samples_rep = [T._sample("grounding", r["question_id"], [r["answer_bbox"]], answer_bbox=r["answer_bbox"], size=r["size"])
                   for r in records + [repeat]]
    _, kept = last_record_wins(ns, coin.task("grounding"), records + [repeat], samples_rep)
    for k, texts in {"repeated-id-last-box": ["[0.00, 0.00, 0.30, 0.30]"] + boxes[1:], "repeated-id-first-box": boxes}.items():
        lines = T._lines(kept, texts)
        compare(rows, f"grounding@coin/{k}", T._cell(ours.tmp, "grounding", kept, lines, spec=coin),
                ref.grounding(records + [repeat], lines))
    # ImageNet: only the last chunk of the merged file lost
    s, t = T._imagenet()
    lines = T._lines(s, t)
    metric = {"compat": "substring@coin", "standard": "exact_any@m4c"}
    for k, part in {"tail-lost": lines[:13], "tail-lost-one": lines[:-1], "middle-chunk-lost": lines[:5] + lines[10:]}.items():
        compare(rows, f"imagenet@coin/{k}", ours("imagenet", s, part, "coin", metrics=metric), ref.imagenet("coin", s, part),
                positional=k == "middle-chunk-lost")
    # TextVQA/GQA: a line naming an official id that CoIN's eval file lacks
    s, t, _ = T._textvqa()
    official = [{"id": "7777", "references": ["yield"] * 10, "meta": {"question_id_type": "int"}},
                {"id": "7778", "references": ["stop"] * 10, "meta": {"question_id_type": "int"}}]
    lines = T._lines(s, t) + [{"question_id": 7777, "text": "yield"}, {"question_id": 7778, "text": "go"}]
    compare(rows, "textvqa@coin/official-id-not-in-eval-file", ours("textvqa", s, lines, "coin", notes={"official_extra": official}),
            ref.textvqa("coin", s, lines, official))
    s, t = T._gqa()
    official = [{"id": "20199999", "references": ["dog"], "meta": {"question_id_type": "str", "is_balanced": True,
                                                                   "structural": "query"}}]
    lines = T._lines(s, t) + [{"question_id": "20199999", "text": "Dog."}]
    compare(rows, "gqa@coin/official-id-not-in-eval-file", ours("gqa", s, lines, "coin", notes={"official_extra": official}),
            ref.gqa("coin", s, lines, official))
    # General Knowledge: replies evaluate_score.py reads (value = its printed Final score)
    for k, replies in {"plain": ["8", "7", "10", "3"], "quirks": ["8/10", "Score: 10", "Score: 8/10", "7.5 out of 10", "nan", "-3"],
                       "superscript": ["8", "²/10", "7"], "circled": ["⑧/10", "5"], "fraction": ["½/10"],
                       "fullwidth": ["１０/10", "6"], "minus-inf": ["8", "-inf"], "half-even": ["5", "0", "0", "0"]}.items():
        cell = aggregate("gk_judge@coin", replies)
        ref_value = ref.general_knowledge(replies)
        compare(rows, f"general-knowledge@coin/{k}", SimpleNamespace(value=cell.value if not cell.refused else None,
                                                                      if_rate=None), ref_value)


def compare(rows, name, cell, ref_value, ref_if=None, positional=False):
    ours_v = cell.value if cell.value is not None else "refused"
    ours_if = cell.if_rate if cell.if_rate is not None else "refused"

    def agree(a, b):
        if isinstance(b, str):
            return a == "refused"
        return not isinstance(a, str) and abs(a - b) <= 1e-9

    value_ok = agree(ours_v, ref_value) or (positional and ours_v == "refused")
    if_ok = ref_if is None or agree(ours_if, ref_if)
    rows.append((name, ours_v, ref_value, ours_if if ref_if is not None else "-", ref_if, value_ok and if_ok))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smolora", type=Path, required=True, help="checkout of Minato-Zackie/SMoLoRA")
    ap.add_argument("--coin", type=Path, help="checkout of zackschen/CoIN (adds the CoIN variants)")
    ap.add_argument("--commits", default="", help="the reference commits, printed in the header (the archives carry none)")
    args = ap.parse_args()
    if args.commits:
        print(f"reference scripts: {args.commits}\n")
    ref = Reference(args.smolora, args.coin)
    variants = ["smolora"] + (["coin"] if args.coin else [])
    rows: list = []
    tmp = WORK / "ours"
    tmp.mkdir()

    def ours(task, samples, lines, variant, notes=None, **task_changes):  # noqa: PLR0913
        spec = T._spec_with(task, extra={"compat_join": f"{ {'places365': 'imagenet'}.get(task, task)}@{variant}"},
                            **task_changes)
        if isinstance(lines, str):
            return T._cell(tmp, task, samples, [], spec=spec, notes=notes, raw=lines)
        return T._cell(tmp, task, samples, lines, spec=spec, notes=notes)

    ours.tmp = tmp
    for variant in variants:
        s, t, _ = T._textvqa()
        for k, lines in scenarios(s, t).items():
            compare(rows, f"textvqa@{variant}/{k}", ours("textvqa", s, lines, variant), ref.textvqa(variant, s, lines),
                    ref.if_rate("eval_vqa_instruction.py", s, lines))
        for task, script in (("vqav2", "eval_vqav2.py"), ("vizwiz", "eval_vizwiz.py"), ("ocrvqa", "eval_ocrvqa.py")):
            s, t = T._vqav2(task) if task != "ocrvqa" else T._ocrvqa()
            for k, lines in scenarios(s, t).items():
                compare(rows, f"{task}@{variant}/{k}", ours(task, s, lines, variant), ref.exact(variant, script, s, lines),
                        ref.if_rate("eval_vqa_instruction.py", s, lines))
        s, t = T._gqa()
        for k, lines in scenarios(s, t).items():
            compare(rows, f"gqa@{variant}/{k}", ours("gqa", s, lines, variant), ref.gqa(variant, s, lines),
                    ref.if_rate("eval_vqa_instruction.py", s, lines))
        for task in ("imagenet", "places365"):
            if task == "places365" and variant == "coin":
                continue   # Places365 is a CVIT (SMoLoRA) task only
            s, t = T._imagenet(task)
            metric = {"compat": "substring@coin", "standard": "exact_any@m4c"} if variant == "coin" else None
            for k, lines in scenarios(s, t).items():
                cell = ours(task, s, lines, variant, **({"metrics": metric} if metric else {}))
                compare(rows, f"{task}@{variant}/{k}", cell, ref.imagenet(variant, s, lines),
                        ref.if_rate("eval_vqa_instruction.py", s, lines), positional=True)
        s, t = T._sqa()
        extra = T.SQA_NOTES["compat_universe"]["extra"]
        sqa = scenarios(s, t, prompt="<image>\nq")
        for k, lines in {**sqa, "first-missing": sqa["clean"][1:]}.items():
            value, base = ref.scienceqa(variant, s, lines, extra)
            compare(rows, f"scienceqa@{variant}/{k}", ours("scienceqa", s, lines, variant, notes=T.SQA_NOTES), value,
                    ref.if_rate("eval_scienceqa_instruction.py", s, lines, base_dir=base))
        if variant == "coin":
            coin_only(ref, rows, ours)
    for task, script in (("flickr30k", "eval_flickr30k_cider.py"), ("textcaps", "eval_textcaps_cider.py")):
        sets = {"spec-5.4": T._captions(task), "300-images": T._random_captions(task, 300)}
        for set_name, (s, t) in sets.items():
            for k, lines in scenarios(s, t).items():
                compare(rows, f"{task}@smolora/{set_name}/{k}", ours(task, s, lines, "smolora"), ref.cider(script, s, lines),
                        ref.if_rate("eval_caption_instruction.py", s, lines, caption=True))
        s2 = [T._sample(task, 1, T.FLICKR[0][2]), T._sample(task, 2, ["two dogs play ."], answer_is_string=True)]
        lines = T._lines(s2, ["a man rides a horse .", "two dogs play ."])
        compare(rows, f"{task}@smolora/string-answer", ours(task, s2, lines, "smolora"), ref.cider(script, s2, lines),
                ref.if_rate("eval_caption_instruction.py", s2, lines, caption=True))

    width = max(len(r[0]) for r in rows)
    print(f"{'cell':<{width}}  {'compat':>22}  {'reference':>22}  {'IF compat':>12}  {'IF ref':>12}  agree")

    def fmt(v):
        if v is None or v == "-":
            return "-"      # not compared (CoIN has no IF track; General Knowledge has no IF)
        return f"{v:.12g}" if isinstance(v, float) else ("crash" if isinstance(v, str) and v != "refused" else str(v))

    for name, ov, rv, oi, ri, ok in rows:
        print(f"{name:<{width}}  {fmt(ov):>22}  {fmt(rv):>22}  {fmt(oi):>12}  {fmt(ri):>12}  {'yes' if ok else 'NO'}")
    print(f"\n{sum(r[-1] for r in rows)} of {len(rows)} cells agree (aggregate and IF rate to 1e-9; crash = refusal)")
    print("\nper task and scenario (agreeing / cells):")
    groups: dict[str, list[bool]] = {}
    for name, *_, ok in rows:
        task, _, scenario = name.partition("/")
        groups.setdefault(task, []).append(ok)
        groups.setdefault(f"  scenario {scenario.split('/')[-1]}", []).append(ok)
    for key in sorted(groups, key=lambda k: (k.startswith(" "), k)):
        print(f"{key:<{width}}  {sum(groups[key])} / {len(groups[key])}")


if __name__ == "__main__":
    main()
