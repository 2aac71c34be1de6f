"""Joining a prediction file to the eval samples, per profile; the join report that counts every deviation.

``standard`` (:func:`standard_join`): by id after ``str()``, one line per sample (duplicates are an error),
every sample in the universe (missing → the metric's rule), unknown ids ignored.

``compat`` (:func:`compat_join`): exactly as the task's reference script reads the merged JSONL
(SMoLoRA ``llava/eval/SMoLoRA/Eval/*.py``, CoIN ``ETrain/Eval/LLaVA/CoIN/*.py``). The scripts differ in four
ways, each a field of a :class:`ReferenceJoin` rule registered in :data:`REFERENCE_JOINS`:

* ``lines`` — which lines are scored: ``every`` line (``for result in results``: duplicates scored twice,
  denominator = lines); the ``last`` line per id (``{id: pred}`` dicts, first position, last value); the
  ``universe`` of problems (ScienceQA loops over ``pid_splits.json["test"]``; a missing one is ``FAILED``);
  or by ``position`` (ImageNet/Places365 pair line i with eval entry i);
* ``ids`` — ``raw``: the JSON id is a dict key as loaded, so ``5`` and ``"5"`` differ (an id re-typed by another
  codebase is not found); ``str``: ``str()`` on both sides;
* ``annotation_ids`` — the JSON type of the ids the script looks up in: the CVIT ``eval-file``'s (recorded by
  prepare in ``meta["question_id_type"]``), ``int`` (official TextVQA annotations) or ``str`` (ScienceQA problem
  ids, GQA question keys);
* ``unknown`` — an id the script cannot find: ``crash`` (``annotations[id]`` raises ``KeyError``) or ``ignore``.

Where the script would crash, :class:`ReferenceCrash` names the file, the line and what the script would have
done; the caller refuses the cell's compat value (``standard`` still scores it). Positional rules also refuse
files whose line i is not eval entry i (the script prints a number that means nothing); a file that is eval
entries 1..k in order (only the end lost) is scored over those k lines, as the script does.
Our own prediction files (``uid`` keys) join by uid; id typing does not arise for them, a positional task's
file with exactly one line per sample is put in eval-file order (the order the reference's merged file has; the
runner writes batches sorted by prompt length), and the crash cases that need a field only reference-format
lines carry (ScienceQA's ``prompt``) are checked for those lines only.

The instruction-following scripts read the file their own way (:func:`compat_if_items`): ScienceQA loops over
the universe (dict by raw id, missing → negative; it crashes with ``NameError`` when the *first* problem is
missing, because ``pred`` is then unbound); the short-answer and caption scripts loop over ``{id: pred}.values()``
— every distinct raw id, unknown ones included — and look the answer up by raw id in the eval file
(``answers.get(id, "")`` / ``.get(id, [])``), independent of line order.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..errors import DataError
from ..formats.predictions import PredictionFile
from ..registry import Registry
from ..formats.sample import Sample
from .common import meta_of
from .heetal_keys import QuestionKey, UnreadableLine, annotation_pairs, line_key, prediction_text

N_EXAMPLES = 5
Lines = Literal["every", "last", "universe", "position"]
Ids = Literal["raw", "str"]
AnnotationIds = Literal["eval-file", "int", "str"]


class ReferenceCrash(Exception):
    """The reference script would raise on this file; ``str()`` says where and what it would have done."""


@dataclass
class JoinReport:
    """What a join found in one prediction file; ``rule`` names the compat rule (None for standard)."""

    n_lines: int
    unknown: list[str] = field(default_factory=list)      # ids matching no sample, even after str()
    duplicates: list[str] = field(default_factory=list)   # ids on more than one line
    n_duplicate_lines: int = 0                            # lines beyond the first of each duplicated id
    missing: list[str] = field(default_factory=list)      # uids of samples without a matching line
    retyped: list[str] = field(default_factory=list)      # ids that match a sample only after str() (JSON type differs)
    official_only: int = 0                                # ScienceQA: official test problems absent from the eval file
    rule: str | None = None
    handling: dict[str, str] = field(default_factory=dict)  # deviation -> what the rule did with it

    def to_dict(self) -> dict[str, Any]:
        return {"n_lines": self.n_lines, "rule": self.rule,
                "n_unknown": len(self.unknown), "unknown_examples": self.unknown[:N_EXAMPLES],
                "n_duplicates": len(self.duplicates), "n_duplicate_lines": self.n_duplicate_lines,
                "duplicate_examples": self.duplicates[:N_EXAMPLES],
                "n_missing": len(self.missing), "missing_examples": self.missing[:N_EXAMPLES],
                "n_retyped": len(self.retyped), "retyped_examples": self.retyped[:N_EXAMPLES],
                "n_official_only": self.official_only, "handling": dict(self.handling)}

    @property
    def clean(self) -> bool:
        return not (self.unknown or self.duplicates or self.missing or self.retyped)

    def warnings(self, where: str) -> list[str]:
        out = []
        for name, items in (("unknown ids", self.unknown), ("duplicate ids", self.duplicates),
                            ("missing predictions", self.missing), ("re-typed ids", self.retyped)):
            if items:
                how = self.handling.get(name.split()[0])
                out.append(f"{where}: {len(items)} {name} (e.g. {', '.join(items[:N_EXAMPLES])})"
                           + (f"; {how}" if how else ""))
        return out


@dataclass
class Joined:
    """The metric's input: ``samples[i]`` scored with ``texts[i]`` (None = no prediction); ``lines[i]`` its line."""

    samples: list[Sample]
    texts: list[str | None]
    lines: list[int | None]
    report: JoinReport


# ------------------------------------------------------------------------------------------ keys


def _raw_keys(pf: PredictionFile) -> list[Any]:
    return pf.raw_keys if len(pf.raw_keys) == len(pf.keys) else list(pf.keys)


def annotation_key(sample: Sample, annotation_ids: AnnotationIds) -> Any:
    """The id as the script's annotation dict holds it (typed); the eval-file type comes from prepare's meta."""
    kind = meta_of(sample).get("question_id_type") if annotation_ids == "eval-file" else annotation_ids
    if kind == "int":
        try:
            return int(sample.source_id)
        except ValueError:
            return sample.source_id
    return sample.source_id


def _hashable(key: Any) -> bool:
    return isinstance(key, Hashable)


class _Index:
    """Sample lookup by a line's id, as a raw- or str-keyed reference dict does, noting re-typed ids."""

    def __init__(self, samples: Sequence[Sample], pf: PredictionFile, ids: Ids, annotation_ids: AnnotationIds):
        self.by_uid = pf.key_kind == "uid"
        self.ids = ids
        self.by_str = {(s.uid if self.by_uid else s.source_id): s for s in samples}
        self.typed = {} if self.by_uid else {annotation_key(s, annotation_ids): s for s in samples}

    def find(self, raw: Any) -> tuple[Sample | None, bool]:
        """(the sample the script finds, whether the id is re-typed w.r.t. the annotation)."""
        as_str = self.by_str.get(str(raw))
        if self.by_uid:
            return as_str, False
        typed = self.typed.get(raw) if _hashable(raw) else None
        retyped = as_str is not None and typed is None
        if self.ids == "raw":
            return typed, retyped
        return as_str, retyped


def _counts(keys: Sequence[str]) -> tuple[list[str], int]:
    counts = Counter(keys)
    dups = [k for k, c in counts.items() if c > 1]
    return dups, sum(c - 1 for c in counts.values())


def _dict_key(raw: Any, ids: Ids) -> Any:
    """The key a reference dict files a line under: the JSON value itself (``5 == 5.0``, ``5 != "5"``) or its str()."""
    if ids == "str":
        return str(raw)
    if not _hashable(raw):
        return ("unhashable", str(raw))
    return raw


def _line_ref(pf: PredictionFile, i: int) -> str:
    return f"{pf.path}: line {pf.lines[i]} (question_id {_raw_keys(pf)[i]!r})"


# ------------------------------------------------------------------------------------------ standard


def standard_join(samples: list[Sample], pf: PredictionFile, universe: str) -> Joined:
    """Join by id after ``str()``; duplicates are an error; ``universe`` is the metric's (samples | predictions)."""
    key_of = (lambda s: s.uid) if pf.key_kind == "uid" else (lambda s: s.source_id)
    index = {key_of(s): s for s in samples}
    dups, n_dup = _counts(pf.keys)
    report = JoinReport(n_lines=len(pf), unknown=[k for k in dict.fromkeys(pf.keys) if k not in index],
                        duplicates=dups, n_duplicate_lines=n_dup,
                        handling={"unknown": "ignored", "missing": "scored as the empty string"})
    if dups:
        raise DataError(f"{len(dups)} duplicate ids (e.g. {', '.join(dups[:N_EXAMPLES])}); the standard profile "
                        "joins by id and needs one line per sample", file=pf.path, field=pf.key_kind)
    present = dict(zip(pf.keys, range(len(pf))))
    report.missing = [s.uid for s in samples if key_of(s) not in present]
    if pf.key_kind == "source_id":
        raws = _raw_keys(pf)
        report.retyped = [k for k, raw in zip(pf.keys, raws) if k in index
                          and annotation_key(index[k], "eval-file") != raw]
    if universe == "predictions":
        pairs = [(index[k], t, pf.lines[i]) for i, (k, t) in enumerate(zip(pf.keys, pf.texts)) if k in index]
    else:
        pairs = [(s, pf.texts[present[key_of(s)]] if key_of(s) in present else None,
                  pf.lines[present[key_of(s)]] if key_of(s) in present else None) for s in samples]
    return Joined([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs], report)


# ------------------------------------------------------------------------------------------ compat rules

Check = Callable[["Joined", PredictionFile], None]  # raises ReferenceCrash


@dataclass(frozen=True)
class ReferenceJoin:
    id: str
    script: str
    lines: Lines
    ids: Ids
    annotation_ids: AnnotationIds
    unknown: Literal["crash", "ignore"]
    string_answer: Literal["one", "chars"] = "one"   # Flickr30k: the best-reference loop runs over a string's characters
    reads_every_line: bool = False   # GQA: convert_gqa_for_eval.py calls text.rstrip() on every line, unknown ids too
    # A ``text`` that is null or not a string: most scripts call a str method on it and ``crash``; CoIN's Grounding
    # parses it inside ``try/except: continue``, so the line counts as ``wrong`` (still in the denominator).
    non_string_text: Literal["crash", "wrong"] = "crash"
    # The script reads the file with ``json.loads`` on every line (every CoIN and SMoLoRA scorer, IF scripts and
    # convert_gqa_for_eval.py included), so a blank line or a UTF-8 BOM crashes it before anything is scored.
    json_per_line: bool = True
    # He et al.'s dispatchers look a line up by (id, question parsed from its prompt), not by id alone
    # (:mod:`cvit_bench.scoring.heetal_keys`); ``ids``/``annotation_ids`` are then unused.
    question_key: QuestionKey | None = None
    checks: tuple[Check, ...] = ()

    @property
    def handling(self) -> dict[str, str]:
        dup = {"every": "every line scored", "last": "the last line per id kept", "universe": "the last line per id kept",
               "position": "scored by position"}[self.lines]
        missing = {"universe": "scored as FAILED (wrong), in the denominator", "position": "refused (positional)"}.get(
            self.lines, "not scored, not in the denominator")
        unknown = "refused: the script raises KeyError" if self.unknown == "crash" else "ignored, as the script does"
        retyped = ("matched after str(), as the script does" if self.ids == "str"
                   else "not found by the script's type-sensitive lookup: " + ("refused" if self.unknown == "crash" else "treated as unknown"))
        return {"duplicate": dup, "missing": missing, "unknown": unknown, "re-typed": retyped}


REFERENCE_JOINS: Registry[ReferenceJoin] = Registry("compat reference join", key="id")


def compat_join(samples: list[Sample], pf: PredictionFile, rule: ReferenceJoin,
                universe: list[Sample] | None = None, *, strict: bool = True) -> Joined:
    """The samples and texts the reference script scores (raises :class:`ReferenceCrash` where it would crash).

    ``universe`` (ScienceQA): the problems the script loops over, when it differs from ``samples`` (official test
    problems missing from the eval file are in it, samples outside the official split are not).
    ``strict=False`` never raises: it only fills the join report (for a refused cell).
    """
    handling = rule.handling   # the report says what the real rule does, also for a refused cell
    if not strict:
        rule = replace(rule, unknown="ignore", checks=(), reads_every_line=False,
                       lines="last" if rule.lines == "position" else rule.lines)
    if strict and rule.json_per_line:
        _refuse_unreadable_lines(pf, rule.script)
    raws = _raw_keys(pf)
    index = _Index(universe if universe is not None else samples, pf, rule.ids, rule.annotation_ids)
    found = [index.find(raw) for raw in raws]
    keys = [_dict_key(raw, rule.ids) for raw in raws]
    per_key = Counter(keys)
    report = JoinReport(n_lines=len(pf), rule=rule.id, handling=handling)
    report.duplicates = list(dict.fromkeys(str(r) for r, k in zip(raws, keys) if per_key[k] > 1))
    report.n_duplicate_lines = sum(c - 1 for c in per_key.values())
    report.unknown = list(dict.fromkeys(str(r) for r, (s, re) in zip(raws, found) if s is None and not re))
    report.retyped = list(dict.fromkeys(str(r) for r, (s, re) in zip(raws, found) if re))
    if universe is not None and rule.lines == "universe":
        report.official_only = sum(1 for s in universe if meta_of(s).get("official_only"))

    if rule.question_key is not None:
        joined = _question_keyed(samples, pf, rule, report, strict)
    elif rule.lines == "position":
        joined = _positional(samples, pf, rule, report)
    else:
        if rule.unknown == "crash":
            for i, (raw, (s, re)) in enumerate(zip(raws, found)):
                if s is None:
                    why = ("its id is re-typed (the annotation's id is another JSON type) and"
                           if re else "its id is not in the annotations and")
                    raise ReferenceCrash(f"{_line_ref(pf, i)}: {why} {rule.script} would raise KeyError looking it up "
                                         "(the reference prints no number for this file)")
        if rule.lines == "every":
            picks = [i for i, (s, _) in enumerate(found) if s is not None]
        else:
            last: dict[Any, int] = {}
            for i, k in enumerate(keys):
                last[k] = i   # dict semantics: first position, last value
            picks = [i for i in last.values() if found[i][0] is not None]
        if rule.lines == "universe":
            by_uid = {found[i][0].uid: i for i in picks}
            pool = universe if universe is not None else samples
            joined = Joined(list(pool), [pf.texts[by_uid[s.uid]] if s.uid in by_uid else None for s in pool],
                            [pf.lines[by_uid[s.uid]] if s.uid in by_uid else None for s in pool], report)
        else:
            joined = Joined([found[i][0] for i in picks], [pf.texts[i] for i in picks], [pf.lines[i] for i in picks], report)
        seen = {s.uid for s, t in zip(joined.samples, joined.texts) if t is not None}
        pool = universe if universe is not None and rule.lines == "universe" else samples
        report.missing = [s.uid for s in pool if s.uid not in seen]
        if rule.lines != "universe":   # official ids outside the eval file that lines name (TextVQA, GQA)
            report.official_only = len({s.uid for s in joined.samples if meta_of(s).get("official_only")})
    if strict:
        _refuse_missing_texts(pf, pf.lines if rule.reads_every_line or rule.lines != "universe"
                              else [ln for ln in joined.lines if ln is not None], rule.script)
    if strict and rule.non_string_text == "crash":
        _refuse_null_texts(pf, pf.lines if rule.reads_every_line else [ln for ln in joined.lines if ln is not None],
                           rule.script)
    if rule.string_answer == "chars":
        joined.samples = [replace(s, references=list(s.references[0])) if meta_of(s).get("answer_is_string") and s.references
                          else s for s in joined.samples]
    for check in rule.checks:
        check(joined, pf)
    return joined


def _question_keyed(samples: list[Sample], pf: PredictionFile, rule: ReferenceJoin, report: JoinReport,
                    strict: bool) -> Joined:
    """He et al.'s dispatchers: every line looked up by (question_id as loaded, question parsed from the prompt)
    in the eval file's annotation dict; a pair not in it raises KeyError. Our own files join by uid."""
    key = rule.question_key
    raws = _raw_keys(pf)
    if pf.key_kind == "uid":
        by_uid = {s.uid: s for s in samples}
        pairs: list[Any] = list(pf.keys)
        found = [(by_uid.get(k), False) for k in pf.keys]
    else:
        annotations = annotation_pairs(samples, key)
        by_str = {(str(a), q): s for (a, q), s in annotations.items()}
        pairs, found = [], []
        for i, raw in enumerate(raws):
            try:
                pair = line_key(raw, pf.records[i] if i < len(pf.records) else {}, key)
            except UnreadableLine as why:
                if strict:
                    raise ReferenceCrash(f"{_line_ref(pf, i)}: {rule.script} would raise {why} (the reference prints "
                                         "no number for this file)") from None
                pairs.append(("unreadable", i))
                found.append((None, False))
                continue
            hit = annotations.get(pair)
            pairs.append(pair)
            found.append((hit, hit is None and (str(pair[0]), pair[1]) in by_str))
    per_pair = Counter(map(repr, pairs))
    report.duplicates = list(dict.fromkeys(str(r) for r, p in zip(raws, pairs) if per_pair[repr(p)] > 1))
    report.n_duplicate_lines = sum(c - 1 for c in per_pair.values())
    report.unknown = list(dict.fromkeys(str(r) for r, (s, re) in zip(raws, found) if s is None and not re))
    report.retyped = list(dict.fromkeys(str(r) for r, (s, re) in zip(raws, found) if re))
    if rule.unknown == "crash":
        for i, (s, re) in enumerate(found):
            if s is None:
                what = (f"(question_id {raws[i]!r}, question {pairs[i][1]!r})" if pf.key_kind == "source_id"
                        else f"uid {pf.keys[i]!r}")
                why = " (the annotation's id is another JSON type)" if re else ""
                raise ReferenceCrash(f"{_line_ref(pf, i)}: {what} is not a key of the annotations{why}; "
                                     f"{rule.script} would raise KeyError looking it up (the reference prints no "
                                     "number for this file)")
    picks = [i for i, (s, _) in enumerate(found) if s is not None]
    seen = {found[i][0].uid for i in picks}
    report.missing = [s.uid for s in samples if s.uid not in seen]
    return Joined([found[i][0] for i in picks], [prediction_text(pf.texts[i], key) for i in picks],
                  [pf.lines[i] for i in picks], report)


def _refuse_unreadable_lines(pf: PredictionFile, script: str) -> None:
    if pf.unreadable_lines:
        line, why = next(iter(pf.unreadable_lines.items()))
        raise ReferenceCrash(f"{pf.path}: the reference would crash at line {line}: {why} ({script} calls "
                             "json.loads on every line); remove it or use --profile standard")


def _refuse_missing_texts(pf: PredictionFile, read_lines: Sequence[int], script: str) -> None:
    """``result['text']`` on a line without the field raises KeyError (outside Grounding's try, too)."""
    hit = next((ln for ln in read_lines if ln in pf.missing_text_lines), None)
    if hit is not None:
        raise ReferenceCrash(f"{pf.path}: line {hit}: no `text` field; {script} would raise KeyError reading "
                             "result['text']")


def _refuse_null_texts(pf: PredictionFile, scored_lines: Sequence[int], script: str) -> None:
    """A ``"text": null`` (or number, list, object) line the script reads makes it call a str method on it
    (AttributeError/TypeError)."""
    hit = next((ln for ln in scored_lines if ln in pf.null_lines or ln in pf.non_string_lines), None)
    if hit is not None:
        what = "null" if hit in pf.null_lines else f"a JSON {pf.non_string_lines[hit]}, not a string"
        raise ReferenceCrash(f"{pf.path}: line {hit}: `text` is {what}; {script} would raise on it (a str method "
                             f"called on {'None' if hit in pf.null_lines else 'it'})")


def _positional(samples: list[Sample], pf: PredictionFile, rule: ReferenceJoin, report: JoinReport) -> Joined:
    expected = [s.uid if pf.key_kind == "uid" else s.source_id for s in samples]
    present = set(pf.keys)
    report.missing = [s.uid for s, k in zip(samples, expected) if k not in present]
    if pf.key_kind == "uid" and sorted(pf.keys) == sorted(expected):
        # Our own files are written batch by batch in prompt-length order; the reference's merged file is the
        # same predictions in eval-file order, so one line per sample is put back into that order by uid.
        at = {k: i for i, k in enumerate(pf.keys)}
        order = [at[k] for k in expected]
        return Joined(list(samples), [pf.texts[i] for i in order], [pf.lines[i] for i in order], report)
    if len(pf.keys) > len(expected):
        raise ReferenceCrash(f"{pf.path}: line {pf.lines[len(expected)]}: the file has {len(pf.keys)} lines but the eval "
                             f"file {len(expected)} entries; {rule.script} would raise IndexError at this line")
    k = len(pf.keys)
    if pf.key_kind == "uid" and k < len(expected):
        # Our files are in the runner's order, so which entries a short one lacks says nothing about the order
        # the reference's merged file would have: no prefix to trust.
        raise ReferenceCrash(f"{pf.path}: {k} lines for {len(expected)} eval entries; {rule.script} pairs line i "
                             "with eval entry i, and a merged file lacking these samples would be misaligned (its "
                             "number would mean nothing)")
    if pf.keys != expected[:k]:
        first = next(i for i, (a, b) in enumerate(zip(pf.keys, expected)) if a != b)
        short = (f" ({k} lines for {len(expected)} eval entries: not only the end is missing)"
                 if k < len(expected) else "")
        raise ReferenceCrash(f"{pf.path}: line {pf.lines[first]}: question_id {pf.keys[first]!r} but eval entry {first + 1} "
                             f"is {expected[first]!r}: the file is not in eval-file order{short}; {rule.script} pairs line i with eval entry i whatever the "
                             "id, so from this line on it compares predictions with the wrong answers and prints a "
                             "number that means nothing")
    # Lines 1..k are eval entries 1..k (a merged file whose last chunk is lost): the script's number over those k
    # lines is meaningful, and it is the one given.
    return Joined(list(samples[:k]), list(pf.texts), list(pf.lines), report)


# ------------------------------------------------------------------------------------------ crash checks


def _nothing_scored(what: str) -> Check:
    def check(joined: Joined, pf: PredictionFile) -> None:
        if not any(t is not None for t in joined.texts):
            raise ReferenceCrash(f"{pf.path}: no line is scored; {what}")
    return check


def _ten_answers(joined: Joined, pf: PredictionFile) -> None:
    for s, line in zip(joined.samples, joined.lines):
        if len(s.references) != 10:
            raise ReferenceCrash(f"{pf.path}: line {line} ({s.source_id}): {len(s.references)} human answers; m4c's "
                                 "TextVQAAccuracyEvaluator asserts exactly 10 (AssertionError)")


def _caption_corpus(script: str, per_reference_corpus: bool) -> Check:
    """CiderScorer raises ValueError (``max()`` of no document frequencies) on a corpus without any n-gram."""
    def check(joined: Joined, pf: PredictionFile) -> None:
        if not joined.samples:
            raise ReferenceCrash(f"{pf.path}: no line has an id of the eval file; {script} would call CiderScorer on "
                                 "an empty corpus and raise ValueError")
        for s, line in zip(joined.samples, joined.lines):
            if not s.references:
                raise ReferenceCrash(f"{pf.path}: line {line} ({s.source_id}): the eval file's answer is empty; "
                                     f"{script} would fail in CiderScorer (no reference)")
            if per_reference_corpus and not any(r.split() for r in s.references):
                raise ReferenceCrash(f"{pf.path}: line {line} ({s.source_id}): no reference has a token; the "
                                     f"best-reference mini-corpus of {script} has no n-gram and CiderScorer raises ValueError")
        refs = [t for t in joined.texts] if per_reference_corpus else [r for s in joined.samples for r in s.references]
        if not any((r or "").split() for r in refs):
            raise ReferenceCrash(f"{pf.path}: no reference of the final corpus has a token; {script} would raise "
                                 "ValueError in CiderScorer (max() of no document frequencies)")
    return check


def _scienceqa_prompts(img_accuracy: bool) -> Check:
    """eval_science_qa.py reads ``pred['prompt']``; SMoLoRA's also divides by the problems whose prompt has ``<image>``."""
    def check(joined: Joined, pf: PredictionFile) -> None:
        if pf.key_kind != "source_id":
            return
        by_line = dict(zip(pf.lines, pf.records or [{}] * len(pf)))
        multimodal = 0
        for s, line in zip(joined.samples, joined.lines):
            if line is None:
                continue   # a missing problem gets the prompt 'Unknown'
            record = by_line.get(line, {})
            if "prompt" not in record:
                raise ReferenceCrash(f"{pf.path}: line {line} ({s.source_id}): no `prompt` field; eval_science_qa.py "
                                     "would raise KeyError reading pred['prompt']")
            prompt = record["prompt"]
            if not isinstance(prompt, (str, list, dict)):   # '<image>' in prompt: TypeError on null or a number
                raise ReferenceCrash(f"{pf.path}: line {line} ({s.source_id}): `prompt` is {json.dumps(prompt)}; "
                                     "eval_science_qa.py would raise TypeError testing '<image>' in pred['prompt']")
            multimodal += "<image>" in prompt
        if img_accuracy and joined.samples and multimodal == 0:
            raise ReferenceCrash(f"{pf.path}: no scored prompt contains '<image>'; SMoLoRA's eval_science_qa.py would "
                                 "raise ZeroDivisionError computing IMG-Accuracy")
    return check


def _gqa_nothing_balanced(joined: Joined, pf: PredictionFile) -> None:
    """eval_gqa.py's chiSquare divides by the predicted balanced questions that have a global group."""
    balanced = [s for s in joined.samples if meta_of(s).get("is_balanced", True)]
    if not balanced:
        raise ReferenceCrash(f"{pf.path}: no balanced question is predicted; eval_gqa.py would raise "
                             "ZeroDivisionError in chiSquare (the distribution metric)")
    metas = [meta_of(s) for s in balanced]
    if all("global_group" in m for m in metas) and all(m["global_group"] is None for m in metas):
        raise ReferenceCrash(f"{pf.path}: no predicted balanced question has a global group (groups.global); "
                             "eval_gqa.py would raise ZeroDivisionError in chiSquare")


_EMPTY = "the script divides by the number of lines and raises ZeroDivisionError"
_EMPTY_M4C = "m4c's eval_pred_list divides by the number of lines and raises ZeroDivisionError"
_SMOLORA = "SMoLoRA llava/eval/SMoLoRA/Eval/"
_COIN = "CoIN ETrain/Eval/LLaVA/CoIN/"

for _rule in (
    ReferenceJoin("scienceqa@smolora", _SMOLORA + "eval_science_qa.py", "universe", "raw", "str", "ignore",
                  checks=(_scienceqa_prompts(img_accuracy=True),)),
    ReferenceJoin("scienceqa@coin", _COIN + "eval_science_qa.py", "universe", "raw", "str", "ignore",
                  checks=(_scienceqa_prompts(img_accuracy=False),)),
    ReferenceJoin("textvqa@smolora", _SMOLORA + "eval_textvqa.py", "every", "raw", "int", "crash",
                  checks=(_nothing_scored(_EMPTY_M4C), _ten_answers)),
    ReferenceJoin("textvqa@coin", _COIN + "eval_textvqa.py", "every", "str", "int", "crash",
                  checks=(_nothing_scored(_EMPTY_M4C), _ten_answers)),
    ReferenceJoin("gqa@smolora", "convert_gqa_for_eval.py + " + _SMOLORA + "eval_gqa.py", "last", "raw", "str", "crash",
                  reads_every_line=True, checks=(_gqa_nothing_balanced,)),
    ReferenceJoin("gqa@coin", "convert_gqa_for_eval.py + " + _COIN + "eval_gqa.py", "last", "raw", "str", "crash",
                  reads_every_line=True, checks=(_gqa_nothing_balanced,)),
    ReferenceJoin("imagenet@smolora", _SMOLORA + "eval_ImagetNet.py", "position", "str", "eval-file", "crash"),
    ReferenceJoin("imagenet@coin", _COIN + "eval_ImagetNet.py", "position", "str", "eval-file", "crash"),
    # CoIN eval_grounding.py: a dict by raw question_id, every line scored, an unknown id raises KeyError; the
    # text is parsed inside try/except, so a null or non-string text is a wrong line, not a crash.
    ReferenceJoin("grounding@coin", _COIN + "eval_grounding.py", "every", "raw", "eval-file", "crash",
                  non_string_text="wrong", checks=(_nothing_scored(_EMPTY),)),
    ReferenceJoin("flickr30k@smolora", _SMOLORA + "eval_flickr30k_cider.py", "last", "str", "eval-file", "ignore",
                  string_answer="chars", checks=(_caption_corpus("eval_flickr30k_cider.py", True),)),
    ReferenceJoin("textcaps@smolora", _SMOLORA + "eval_textcaps_cider.py", "last", "str", "eval-file", "ignore",
                  checks=(_caption_corpus("eval_textcaps_cider.py", False),)),
):
    REFERENCE_JOINS.add(_rule)

# Single-answer exact match over every line; the id typing is what differs (CoIN's VQAv2 copy applies str()).
for _task, _script, _ids in (("vqav2", "eval_vqav2.py", {"smolora": "raw", "coin": "str"}),
                             ("vizwiz", "eval_vizwiz.py", {"smolora": "raw", "coin": "raw"}),
                             ("ocrvqa", "eval_ocrvqa.py", {"smolora": "raw", "coin": "raw"})):
    for _variant, _base in (("smolora", _SMOLORA), ("coin", _COIN)):
        REFERENCE_JOINS.add(ReferenceJoin(
            f"{_task}@{_variant}", _base + _script, "every", _ids[_variant], "eval-file", "crash",
            checks=(_nothing_scored(_EMPTY),)))

# He et al. (arXiv 2311.16206): one dispatcher per model family, ``--dataset`` picks the gold field and the evaluator.
# The annotation id per task follows the ground-truth file it reads (docs/benchmarks/cit.md, Scoring): TextVQA's
# official file by image_id, files with question_id by str(question_id), the others by position (a decision where
# He et al.'s ground-truth files were not seen). Every line is scored (a list, no dict of results).
_HEETAL = {"heetal": ("He et al. (arXiv 2311.16206) llava/eval/eval_vqa.py", "llava"),
           "heetal-blip": ("He et al. (arXiv 2311.16206) InstructBLIP eval_vqa.py", "instructblip")}
_HEETAL_ANNOTATION_ID = {"textvqa": "image_id", "vqav2": "question_id", "okvqa": "question_id",
                         "aokvqa": "question_id", "gqa": "question_id", "vizwiz": "index", "ocrvqa": "index",
                         "scienceqa": "index"}
_HEETAL_SOFT = ("vqav2", "okvqa", "vizwiz", "textvqa")   # TextVQAAccuracyEvaluator: asserts 10 answers
for _task, _annotation_id in _HEETAL_ANNOTATION_ID.items():
    for _variant, (_script, _parser) in _HEETAL.items():
        if _task == "scienceqa" and _parser == "instructblip":
            continue   # the InstructBLIP dispatcher has no ScienceQA branch (ValueError: Unknown dataset)
        _prediction = "first-parenthesised" if _task == "aokvqa" and _parser == "instructblip" else "text"
        REFERENCE_JOINS.add(ReferenceJoin(
            f"{_task}@{_variant}", _script, "every", "raw", "eval-file", "crash",
            question_key=QuestionKey(_annotation_id, _parser, _prediction),
            checks=(_nothing_scored(_EMPTY_M4C),) + ((_ten_answers,) if _task in _HEETAL_SOFT else ())))

# The rule a compat metric implies when a task names none (``compat_join`` in the benchmark YAML overrides).
DEFAULT_JOIN_OF_METRIC: dict[str, str] = {
    "mc_letter@llava": "scienceqa@smolora", "vqa_soft@m4c": "textvqa@smolora", "exact@upper": "vqav2@smolora",
    "exact@gqa": "gqa@smolora", "exact@ocrvqa": "ocrvqa@smolora", "substring@smolora": "imagenet@smolora",
    "substring@coin": "imagenet@coin", "cider_d_bestref@whitespace": "flickr30k@smolora",
    "cider_d@whitespace": "textcaps@smolora",
}


def reference_join_for(metric_id: str, explicit: str | None = None) -> ReferenceJoin | None:
    """The compat rule of a task: ``explicit`` (YAML ``compat_join``) or the metric's default; None if neither."""
    name = explicit or DEFAULT_JOIN_OF_METRIC.get(metric_id)
    return REFERENCE_JOINS.get(name) if name else None


# ------------------------------------------------------------------------------------------ IF scripts


@dataclass
class IfItem:
    """One item an IF script judges: the sample it found (None for an unknown id), the text and the answer."""

    sample: Sample | None
    text: str | None      # None: no prediction (ScienceQA loop: negative)
    answer: Any           # the eval file's answer as the script sees it ("" / [] for an unknown id)
    line: int | None


def compat_if_items(check_id: str, samples: list[Sample], pf: PredictionFile,
                    universe: list[Sample] | None = None, first_problem: str | None = None) -> list[IfItem]:
    """The items the SMoLoRA IF script of ``check_id`` judges, in its loop order (raises :class:`ReferenceCrash`)."""
    _refuse_unreadable_lines(pf, "the IF script")
    raws = _raw_keys(pf)
    last: dict[Any, int] = {}
    for i, raw in enumerate(raws):
        if not _hashable(raw):
            raise ReferenceCrash(f"{_line_ref(pf, i)}: an unhashable id; the IF script would raise TypeError "
                                 "building its {question_id: pred} dict")
        last[raw] = i
    by_uid = pf.key_kind == "uid"
    if check_id == "if@choice":
        pool = universe if universe is not None else samples
        typed = {(s.uid if by_uid else annotation_key(s, "str")): s for s in pool}
        hit = {typed[r].uid: i for r, i in last.items() if r in typed}
        if pool:
            first = next((s for s in pool if s.source_id == first_problem), pool[0]) if first_problem else pool[0]
            if first.uid not in hit:
                raise ReferenceCrash(f"{pf.path}: the first problem of the split ({first.source_id}) has no prediction; "
                                     "eval_scienceqa_instruction.py would raise NameError (pred is unbound when it "
                                     "reads pred['prompt'])")
        if pf.key_kind == "source_id":
            for uid, i in hit.items():
                if "prompt" not in (pf.records[i] if i < len(pf.records) else {}):
                    raise ReferenceCrash(f"{_line_ref(pf, i)}: no `prompt` field; eval_scienceqa_instruction.py "
                                         "would raise KeyError reading pred['prompt']")
        _refuse_missing_texts(pf, [pf.lines[i] for i in hit.values()], "eval_scienceqa_instruction.py")
        _refuse_null_texts(pf, [pf.lines[i] for i in hit.values()], "eval_scienceqa_instruction.py")
        return [IfItem(s, pf.texts[hit[s.uid]] if s.uid in hit else None, None,
                       pf.lines[hit[s.uid]] if s.uid in hit else None) for s in pool]
    typed = {(s.uid if by_uid else annotation_key(s, "eval-file")): s for s in samples}
    items = []
    for raw, i in last.items():
        s = typed.get(raw)
        if s is None:
            answer: Any = [] if check_id == "if@caption" else ""
        elif check_id == "if@caption":
            answer = s.references[0] if meta_of(s).get("answer_is_string") and s.references else list(s.references)
        else:
            answer = s.target
        items.append(IfItem(s, pf.texts[i], answer, pf.lines[i]))
    _refuse_missing_texts(pf, pf.lines, "the IF script")   # {id: pred['text']} reads every line
    _refuse_null_texts(pf, [it.line for it in items], "the IF script")
    return items
