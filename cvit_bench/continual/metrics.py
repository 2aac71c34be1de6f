"""Continual-learning aggregates computed from an accuracy matrix (docs/continual-metrics.md).

Notation (docs/continual-metrics.md, Notation): T upstream tasks in benchmark order; ``a[t][i]`` is the score on task i's test set after
upstream stage t (1 ≤ i, t ≤ T); ``b_i`` is the zero-shot score of the base model on task i (row ``"0"``).
Scores are averaged raw on their displayed scale (percent, or CIDEr ×100), as the papers do.

Every aggregate is a formula id in :data:`CL_METRICS`. Named variants of the same idea (``bwt`` vs
``bwt@gem-code`` vs ``bwt@he-code``) are separate ids and are never substituted for one another.

Missing cells (docs/continual-metrics.md, Missing cells): a cell that was not evaluated is ``None``, never 0. A formula that needs a ``None``
cell returns ``None`` (shown as "—"); nulls are never skipped silently. The one documented exception is
``bwt@he-code``, whose reference code takes its max over the *evaluated* cells of a column only.

Degenerate sizes (a project decision, tested): for T = 1 the formulas that divide by T − 1 (BWT, FWT, both
forgettings) are undefined and return ``None``; the ``@gem-code`` variants, which average T entries one of
which is structurally zero, return 0.0 there, as the released GEM code would.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CvitError, DataError, MissingFileError, SchemaVersionError, known_version
from ..files import read_json
from ..registry import Registry
from ..schedule import Stage
from ..formats.results import KNOWN_RESULTS_VERSIONS, MAX_SCORE, SUMMARY_KEYS

Value = float | None

ZERO_SHOT = "0"


# --------------------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------------------


def _normalise_label(label: object, *, where: str) -> str:
    """Stage labels are ``"0"`` (zero-shot) and ``"1"``…``"T"``; ``"01"`` and the int 1 both mean ``"1"``."""
    if isinstance(label, bool):
        raise DataError(f"stage label {label!r} is not a stage number", record=where, field="stages")
    if isinstance(label, int):
        text = str(label)
    elif isinstance(label, str):
        text = label.strip()
    else:
        raise DataError(f"stage label {label!r} must be a string such as '0' or '3'", record=where, field="stages")
    stage = Stage.try_parse(text)
    if stage is None or stage.is_fewshot:
        raise DataError(
            f"unknown stage label {label!r}: use '0' for the zero-shot row and '1'..'T' for the upstream stages",
            record=where,
            field="stages",
        )
    return str(stage)


def _normalise_value(value: object, *, stage: str, task: str) -> Value:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"cell value {value!r} is not a number (use null for 'not evaluated')",
                        record=f"stage {stage}", field=task)
    value = float(value)
    if not math.isfinite(value):
        raise DataError(f"cell value {value!r} is not finite (use null for 'not evaluated', never NaN)",
                        record=f"stage {stage}", field=task)
    if not 0.0 <= value <= MAX_SCORE:
        raise DataError(f"cell value {value!r} is outside 0..{MAX_SCORE:g}: scores are percent or CIDEr x100, never "
                        "negative", record=f"stage {stage}", field=task)
    return value


@dataclass
class AccuracyMatrix:
    """Rows = stage labels (``"0"`` = zero-shot, optional and first; then ``"1"``…``"T"`` ascending, any
    subset), columns = the T upstream tasks in benchmark order, ``None`` = not evaluated.

    Validation raises :class:`DataError` naming the row (stage) and the column (task): ragged rows, NaN or
    infinite values, unknown or duplicate labels, rows out of order, more stage rows than tasks.
    """

    tasks: list[str]
    stages: list[str]
    values: list[list[float | None]]

    def __post_init__(self) -> None:
        tasks = list(self.tasks)
        if not tasks:
            raise DataError("the matrix needs at least one task column", field="tasks")
        for j, name in enumerate(tasks):
            if not isinstance(name, str) or not name.strip():
                raise DataError(f"task name {name!r} in column {j + 1} must be a non-empty string", field="tasks")
        if len(set(tasks)) != len(tasks):
            dup = sorted({t for t in tasks if tasks.count(t) > 1})
            raise DataError(f"duplicate task columns: {', '.join(dup)}", field="tasks")
        T = len(tasks)
        raw_stages = list(self.stages)
        stages = [_normalise_label(s, where=f"row {r + 1}") for r, s in enumerate(raw_stages)]
        upstream = [s for s in stages if s != ZERO_SHOT]
        if len(upstream) > T:
            raise DataError(f"{len(upstream)} upstream stage rows but only {T} task columns", field="stages")
        for r, s in enumerate(stages):
            if int(s) > T:
                raise DataError(f"unknown stage label {raw_stages[r]!r}: with {T} tasks the stages are 0..{T}",
                                record=f"row {r + 1}", field="stages")
        if len(set(stages)) != len(stages):
            dup = sorted({s for s in stages if stages.count(s) > 1}, key=int)
            raise DataError(f"duplicate stage rows: {', '.join(dup)}", field="stages")
        if stages != sorted(stages, key=int):
            raise DataError(f"stage rows must be in order ('0' first, then ascending); got {', '.join(stages)}",
                            field="stages")
        values = list(self.values)
        if len(values) != len(stages):
            raise DataError(f"{len(values)} rows of values for {len(stages)} stage labels", field="values")
        clean: list[list[Value]] = []
        for s, row in zip(stages, values):
            if not isinstance(row, (list, tuple)):
                raise DataError("each row of values must be a list", record=f"stage {s}", field="values")
            if len(row) != T:
                raise DataError(f"ragged row: {len(row)} values for {T} tasks", record=f"stage {s}", field="values")
            clean.append([_normalise_value(v, stage=s, task=tasks[j]) for j, v in enumerate(row)])
        self.tasks, self.stages, self.values = tasks, stages, clean

    # -- access (1-based, like the formulas) ------------------------------------------------------------

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def row(self, stage: int) -> list[Value] | None:
        """The row after upstream stage ``stage`` (0 = zero-shot), or ``None`` when that row is absent."""
        label = str(stage)
        if label not in self.stages:
            return None
        return self.values[self.stages.index(label)]

    def cell(self, stage: int, task: int) -> Value:
        """``a[stage][task]`` with 1-based ``task``; ``stage`` 0 gives ``b_task``; ``None`` = not evaluated."""
        if not 1 <= task <= self.n_tasks or not 0 <= stage <= self.n_tasks:
            raise IndexError(f"cell ({stage}, {task}) outside a {self.n_tasks}-task matrix")
        row = self.row(stage)
        return None if row is None else row[task - 1]

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "stages": list(self.stages), "values": [list(r) for r in self.values]}

    @classmethod
    def from_dict(cls, data: Any) -> AccuracyMatrix:
        if not isinstance(data, dict):
            raise DataError("a matrix must be an object with keys tasks, stages, values")
        for key in ("tasks", "stages", "values"):
            if key not in data:
                raise DataError("required key missing", field=key)
            if not isinstance(data[key], list):
                raise DataError("must be a list", field=key)
        return cls(tasks=data["tasks"], stages=data["stages"], values=data["values"])


# --------------------------------------------------------------------------------------------------
# Formulas
# --------------------------------------------------------------------------------------------------

Formula = Callable[[AccuracyMatrix], Value]
CL_METRICS: Registry[Formula] = Registry("continual-learning metric", key=None)
FORMULA_IDS: list[str] = []   # registration order = display order

ALIASES = {"acc": "ap", "mfn": "ap", "last": "ap", "maa": "map"}


def _formula(formula_id: str) -> Callable[[Formula], Formula]:
    def deco(fn: Formula) -> Formula:
        CL_METRICS.add(fn, formula_id)
        FORMULA_IDS.append(formula_id)
        return fn

    return deco


def get_formula(name: str) -> Formula:
    """Look up a formula id, accepting the papers' other names for the same formula (ACC, MFN, MAA)."""
    return CL_METRICS.get(ALIASES.get(name.lower(), name.lower()))


def _gather(m: AccuracyMatrix, cells: Sequence[tuple[int, int]]) -> list[float] | None:
    """The values of ``cells`` (stage, task); ``None`` as soon as one is missing (docs/continual-metrics.md, Missing cells)."""
    out = []
    for stage, task in cells:
        v = m.cell(stage, task)
        if v is None:
            return None
        out.append(v)
    return out


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


@_formula("ap")
def average_performance(m: AccuracyMatrix) -> Value:
    """AP (SMoLoRA) = ACC (CoIN) = MFN (MCITlib) = "Last": (1/T) Σ_{i=1..T} a[T][i]. Needs the final row."""
    T = m.n_tasks
    final = _gather(m, [(T, i) for i in range(1, T + 1)])
    return None if final is None else _mean(final)


@_formula("mft")
def mean_finetune_accuracy(m: AccuracyMatrix) -> Value:
    """MFT: (1/T) Σ_{i=1..T} a[i][i]. Needs the diagonal."""
    T = m.n_tasks
    diag = _gather(m, [(i, i) for i in range(1, T + 1)])
    return None if diag is None else _mean(diag)


def running_means(m: AccuracyMatrix) -> list[Value]:
    """Mean over the tasks seen so far after each stage: (1/t) Σ_{i=1..t} a[t][i] for t = 1..T (None where
    a needed cell is missing). The curve behind MAP, and the report's "average accuracy over time"."""
    out: list[Value] = []
    for t in range(1, m.n_tasks + 1):
        seen = _gather(m, [(t, i) for i in range(1, t + 1)])
        out.append(None if seen is None else _mean(seen))
    return out


@_formula("map")
def mean_average_performance(m: AccuracyMatrix) -> Value:
    """MAP (SMoLoRA) = MAA (CoIN, MCITlib): (1/T) Σ_{t=1..T} (1/t) Σ_{i=1..t} a[t][i]. Needs the lower triangle."""
    running = running_means(m)
    return None if any(r is None for r in running) else _mean(running)


def _final_minus_diagonal(m: AccuracyMatrix) -> list[float] | None:
    """a[T][i] − a[i][i] for i = 1..T−1, or ``None`` when a needed cell is missing."""
    T = m.n_tasks
    diffs = []
    for i in range(1, T):
        pair = _gather(m, [(T, i), (i, i)])
        if pair is None:
            return None
        diffs.append(pair[0] - pair[1])
    return diffs


@_formula("bwt")
def backward_transfer(m: AccuracyMatrix) -> Value:
    """BWT: (1/(T−1)) Σ_{i=1..T−1} (a[T][i] − a[i][i]). Needs the diagonal and the final row; None for T = 1."""
    if m.n_tasks < 2:
        return None
    diffs = _final_minus_diagonal(m)
    return None if diffs is None else _mean(diffs)


def _first_superdiagonal_gains(m: AccuracyMatrix) -> list[float] | None:
    """a[i−1][i] − b_i for i = 2..T, or ``None`` when a needed cell is missing."""
    T = m.n_tasks
    gains = []
    for i in range(2, T + 1):
        pair = _gather(m, [(i - 1, i), (0, i)])
        if pair is None:
            return None
        gains.append(pair[0] - pair[1])
    return gains


@_formula("fwt")
def forward_transfer(m: AccuracyMatrix) -> Value:
    """FWT: (1/(T−1)) Σ_{i=2..T} (a[i−1][i] − b_i). Needs the first super-diagonal and the zero-shot row."""
    if m.n_tasks < 2:
        return None
    gains = _first_superdiagonal_gains(m)
    return None if gains is None else _mean(gains)


@_formula("forgetting_first")
def forgetting_first(m: AccuracyMatrix) -> Value:
    """Forgetting, first-based (Avalanche): (1/(T−1)) Σ_{i=1..T−1} (a[i][i] − a[T][i]) = −BWT."""
    bwt = backward_transfer(m)
    return None if bwt is None else -bwt


def _max_drops(m: AccuracyMatrix, *, last_l: int) -> list[float] | None:
    """max_{l ∈ {i..last_l}} (a[l][i] − a[T][i]) for i = 1..T−1; ``None`` when a needed cell is missing."""
    T = m.n_tasks
    drops = []
    for i in range(1, T):
        column = _gather(m, [(l, i) for l in range(i, last_l + 1)])
        final = m.cell(T, i)
        if column is None or final is None:
            return None
        drops.append(max(column) - final)
    return drops


@_formula("forgetting_max")
def forgetting_max(m: AccuracyMatrix) -> Value:
    """Forgetting, max-based (Chaudhry et al.): (1/(T−1)) Σ_{i=1..T−1} max_{l ∈ {i..T−1}} (a[l][i] − a[T][i]).

    Needs the lower triangle (rows i..T of column i). A term may be negative (positive backward transfer).
    """
    if m.n_tasks < 2:
        return None
    drops = _max_drops(m, last_l=m.n_tasks - 1)
    return None if drops is None else _mean(drops)


@_formula("bwt@gem-code")
def bwt_gem_code(m: AccuracyMatrix) -> Value:
    """GEM code "BWT": (1/T) Σ_{i=1..T} (a[T][i] − a[i][i]) = ((T−1)/T)·BWT (the i = T term is zero). T = 1 → 0."""
    diffs = _final_minus_diagonal(m)
    return None if diffs is None else math.fsum(diffs) / m.n_tasks


@_formula("fwt@gem-code")
def fwt_gem_code(m: AccuracyMatrix) -> Value:
    """GEM code "FWT": (1/T) (0 + Σ_{i=2..T} (a[i−1][i] − b_i)) = ((T−1)/T)·FWT. T = 1 → 0."""
    gains = _first_superdiagonal_gains(m)
    return None if gains is None else math.fsum(gains) / m.n_tasks


@_formula("forgetting_max@clipped")
def forgetting_max_clipped(m: AccuracyMatrix) -> Value:
    """CoIN++ fork: (1/(T−1)) Σ_{i=1..T−1} max(0, max_{l ∈ {i..T}} (a[l][i] − a[T][i])).

    Same cells as ``forgetting_max``; the l = T term (zero) makes every task's drop ≥ 0, and the explicit
    clip keeps it so. The average is over the T−1 tasks that can be forgotten (the i = T term is 0).
    """
    if m.n_tasks < 2:
        return None
    drops = _max_drops(m, last_l=m.n_tasks)
    return None if drops is None else _mean([max(0.0, d) for d in drops])


@_formula("bwt@he-code")
def bwt_he_code(m: AccuracyMatrix) -> Value:
    """He et al. code "BWT": (1/T) Σ_{j=1..T} (a[T][j] − max_{t evaluated} a[t][j]).

    The max runs over every *evaluated* row of column j, the zero-shot row and above-diagonal cells included;
    unevaluated cells are excluded (the reference code's rule, the one exception to the missing-cells rule). The mean is over
    all T tasks, the last included. Needs the final row. Always ≤ 0; equals −(max-based forgetting that
    also counts the zero-shot row).
    """
    T = m.n_tasks
    terms = []
    for j in range(1, T + 1):
        final = m.cell(T, j)
        if final is None:
            return None
        evaluated = [row[j - 1] for row in m.values if row[j - 1] is not None]
        terms.append(final - max(evaluated))
    return _mean(terms)


# --------------------------------------------------------------------------------------------------
# Instruction following and downstream helpers
# --------------------------------------------------------------------------------------------------


def _strict_mean(values: Sequence[Value], what: str) -> Value:
    """Mean of ``values``; ``None`` when empty or when any entry is ``None`` (never skipped; docs/continual-metrics.md, Missing cells)."""
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    for k, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise DataError(f"{what} entry {k + 1} is {v!r}, not a finite number")
    return math.fsum(values) / len(values)


def mif(if_rates: Sequence[Value]) -> Value:
    """MIF: mean of the IF rates (docs/scoring.md, Instruction-following checks; percent) of the T upstream tasks on the final model; a downstream MIF
    averages the downstream tasks' rates the same way. ``None`` when a rate is missing or the list is empty."""
    return _strict_mean(if_rates, "IF rate")


def zero_shot_ap(values: Sequence[Value]) -> Value:
    """Downstream zero-shot AP (SMoLoRA): mean of the final checkpoint's scores on the downstream tasks
    (CVIT: VizWiz, TextCaps, OCR-VQA), each on its displayed scale. ``None`` when a score is missing."""
    return _strict_mean(values, "downstream score")


# --------------------------------------------------------------------------------------------------
# Summaries and the consistency identity
# --------------------------------------------------------------------------------------------------

#: results.json summary key → formula id (MIF comes from the IF rates, not the matrix).
SUMMARY_FORMULAS = {
    "AP": "ap",
    "MAP": "map",
    "MFT": "mft",
    "BWT": "bwt",
    "FWT": "fwt",
    "forgetting_first": "forgetting_first",
    "forgetting_max": "forgetting_max",
}


def _check_if_rates(matrix: AccuracyMatrix, final_if_rates: Sequence[Value] | None) -> None:
    if final_if_rates is not None and len(final_if_rates) != matrix.n_tasks:
        raise DataError(f"{len(final_if_rates)} IF rates for {matrix.n_tasks} tasks", field="if_rates")


def summarize(matrix: AccuracyMatrix, final_if_rates: Sequence[Value] | None = None) -> dict[str, Value]:
    """The results.json ``summary`` block: exactly :data:`cvit_bench.formats.results.SUMMARY_KEYS`, ``None`` where
    not computable. ``final_if_rates`` are the upstream tasks' IF rates on the final model, in task order."""
    _check_if_rates(matrix, final_if_rates)
    out: dict[str, Value] = {key: CL_METRICS.get(fid)(matrix) for key, fid in SUMMARY_FORMULAS.items()}
    out["MIF"] = None if final_if_rates is None else mif(final_if_rates)
    # "+ 0.0" turns a -0.0 (e.g. forgetting of a run that forgot nothing) into 0.0 for display.
    return {key: (None if out[key] is None else out[key] + 0.0) for key in SUMMARY_KEYS}


def all_aggregates(matrix: AccuracyMatrix, final_if_rates: Sequence[Value] | None = None) -> dict[str, Value]:
    """Every registered formula id → its value (``None`` where not computable), in display order; with
    ``final_if_rates`` also ``"mif"``."""
    _check_if_rates(matrix, final_if_rates)
    out = {fid: CL_METRICS.get(fid)(matrix) for fid in FORMULA_IDS}
    if final_if_rates is not None:
        out["mif"] = mif(final_if_rates)
    return out


def identity_residual(mfn: float, mft: float, bwt: float, n_tasks: int) -> float:
    """MFN − MFT − ((T−1)/T)·BWT: zero by definition, because the i = T term of BWT is zero (docs/continual-metrics.md, Consistency identity)."""
    return mfn - mft - (n_tasks - 1) / n_tasks * bwt


def identity_tolerance(n_tasks: int, decimals: int = 2) -> float:
    """Largest |identity residual| that rounding alone can cause when MFN, MFT and BWT are printed with
    ``decimals`` decimals: each is off by at most h = 0.5·10^−decimals, so |residual| ≤ 2h + ((T−1)/T)·h.
    On the BWT scale (residual × T/(T−1)) that is 2h·T/(T−1) + h, e.g. 0.0175 for T = 5 and two decimals —
    inside the looser 3h·T/(T−1) = 0.015·T/(T−1)."""
    h = 0.5 * 10.0 ** (-decimals)
    return 2 * h + (n_tasks - 1) / n_tasks * h


def identity_check(matrix: AccuracyMatrix) -> Value:
    """MFN − MFT − ((T−1)/T)·BWT computed from the matrix (≈ 0 up to float error); ``None`` when one of
    the three is not computable. ((T−1)/T)·BWT is ``bwt@gem-code``, so T = 1 gives 0."""
    mfn, mft, bwt_t = average_performance(matrix), mean_finetune_accuracy(matrix), bwt_gem_code(matrix)
    if mfn is None or mft is None or bwt_t is None:
        return None
    return mfn - mft - bwt_t


# --------------------------------------------------------------------------------------------------
# Reading a matrix file (I/O at the edge)
# --------------------------------------------------------------------------------------------------


def _with_file(exc: DataError, path: Path) -> DataError:
    return DataError(exc.reason, file=path, record=exc.record, field=exc.field)


def _parse_csv_cell(text: str, *, path: Path, line: int, stage: str, task: str) -> Value:
    text = text.strip()
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise DataError(f"cell {text!r} is not a number (leave the cell empty for 'not evaluated')",
                        file=path, record=f"row {line} (stage {stage})", field=task) from None


def _read_csv(path: Path) -> AccuracyMatrix:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh)]
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte {exc.start})", file=path) from None
    numbered = [(n + 1, r) for n, r in enumerate(rows) if any(c.strip() for c in r)]
    if not numbered:
        raise DataError("empty CSV: expected a header row of task names", file=path)
    header_line, header = numbered[0]
    tasks = [c.strip() for c in header[1:]]
    for j, name in enumerate(tasks):
        if not name:
            raise DataError(f"header cell {j + 2} is empty; every column needs a task name",
                            file=path, record=f"row {header_line}", field=f"column {j + 2}")
    stages, values = [], []
    for line, r in numbered[1:]:
        label = r[0].strip() if r else ""
        if len(r) != len(header):
            raise DataError(f"{len(r)} cells but the header has {len(header)}",
                            file=path, record=f"row {line} (stage {label or '?'})")
        stages.append(label)
        values.append([_parse_csv_cell(c, path=path, line=line, stage=label, task=tasks[j])
                       for j, c in enumerate(r[1:])])
    try:
        return AccuracyMatrix(tasks=tasks, stages=stages, values=values)
    except DataError as exc:
        raise _with_file(exc, path) from None


def _read_json(path: Path) -> AccuracyMatrix:
    data = read_json(path, "accuracy matrix (JSON)")      # NaN/inf are refused per cell, with its row and column
    # A results.json carries the matrix under "matrix"; accept it as well as a bare matrix object. Its schema
    # version is checked like any results.json reader does (a file from an unknown future version is refused).
    if isinstance(data, dict) and "matrix" in data:
        if "schema_version" in data and not known_version(data["schema_version"], KNOWN_RESULTS_VERSIONS):
            raise SchemaVersionError(path, data["schema_version"], KNOWN_RESULTS_VERSIONS, "results")
        data = data["matrix"]
    try:
        return AccuracyMatrix.from_dict(data)
    except DataError as exc:
        raise _with_file(exc, path) from None


_READERS: dict[str, Callable[[Path], AccuracyMatrix]] = {".csv": _read_csv, ".json": _read_json}


def load_matrix(path: str | os.PathLike) -> AccuracyMatrix:
    """Read an accuracy matrix from CSV or JSON (chosen by the file extension).

    CSV: a header row whose first cell is anything (``stage``) and whose other cells are the task names; one
    row per stage whose first cell is the stage label (``0`` = zero-shot row); an empty cell = not evaluated.
    JSON: ``{"tasks": [...], "stages": [...], "values": [[...]]}`` with ``null`` = not evaluated, or a whole
    results.json (its ``matrix`` block). Errors name the file, the row (stage) and the column (task).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "accuracy matrix (CSV or JSON)")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise CvitError(f"{path}: unknown matrix format {path.suffix!r}; use .csv or .json")
    return reader(path)
