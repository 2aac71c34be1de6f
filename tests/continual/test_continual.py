"""Continual-learning aggregates (docs/continual-metrics.md) against the worked example, published tables and
properties that must hold for any matrix."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvit_bench.continual.metrics import (
    CL_METRICS,
    FORMULA_IDS,
    AccuracyMatrix,
    all_aggregates,
    get_formula,
    identity_check,
    identity_residual,
    identity_tolerance,
    load_matrix,
    mif,
    running_means,
    summarize,
    zero_shot_ap,
)
from cvit_bench.errors import DataError, MissingFileError
from cvit_bench.formats.results import SUMMARY_KEYS

# ------------------------------------------------------------------------------------------------
# docs/continual-metrics.md, Worked example
# ------------------------------------------------------------------------------------------------

WORKED = AccuracyMatrix(
    tasks=["task1", "task2", "task3"],
    stages=["0", "1", "2", "3"],
    values=[[5, 8, 15], [80, 10, 20], [85, 70, 30], [50, 65, 90]],
)

# every value of the worked example's table, plus the two variants the table does not list, computed by hand:
#   forgetting_max@clipped = ((max(80, 85, 50) − 50) + (max(70, 65) − 65)) / 2 = (35 + 5) / 2 = 20
#   bwt@he-code: column maxima over all evaluated rows (zero-shot and above-diagonal included) are 85, 70, 90
#                → ((50 − 85) + (65 − 70) + (90 − 90)) / 3 = −40/3
WORKED_EXPECTED = {
    "ap": 68.3333,
    "mft": 80.0,
    "map": 75.2778,
    "bwt": -17.5,
    "bwt@gem-code": -11.6667,
    "fwt": 8.5,
    "fwt@gem-code": 5.6667,
    "forgetting_first": 17.5,
    "forgetting_max": 20.0,
    "forgetting_max@clipped": 20.0,
    "bwt@he-code": -13.3333,
}


@pytest.mark.parametrize("formula_id", sorted(WORKED_EXPECTED))
def test_worked_example_every_value(formula_id):
    assert CL_METRICS.get(formula_id)(WORKED) == pytest.approx(WORKED_EXPECTED[formula_id], abs=1e-4)


def test_every_registered_formula_is_checked_on_the_worked_example():
    assert set(WORKED_EXPECTED) == set(CL_METRICS.names()) == set(FORMULA_IDS)


def test_worked_example_running_means_and_identity():
    assert running_means(WORKED) == pytest.approx([80.0, 77.5, 68.3333], abs=1e-4)
    assert identity_check(WORKED) == pytest.approx(0.0, abs=1e-9)
    # MFN − MFT = 68.3333 − 80 = −11.6667 = (2/3)·(−17.5)
    assert identity_residual(205 / 3, 80.0, -17.5, 3) == pytest.approx(0.0, abs=1e-12)


def test_summary_block_has_exactly_the_results_keys():
    s = summarize(WORKED, final_if_rates=[90.0, 100.0, 80.0])
    assert tuple(s) == SUMMARY_KEYS
    assert s["AP"] == pytest.approx(68.3333, abs=1e-4)
    assert s["MAP"] == pytest.approx(75.2778, abs=1e-4)
    assert s["FWT"] == pytest.approx(8.5)
    assert s["forgetting_max"] == pytest.approx(20.0)
    assert s["MIF"] == pytest.approx(90.0)
    assert summarize(WORKED)["MIF"] is None
    with pytest.raises(DataError, match="2 IF rates for 3 tasks"):
        summarize(WORKED, final_if_rates=[1.0, 2.0])


def test_all_aggregates_lists_every_formula_in_order():
    agg = all_aggregates(WORKED, final_if_rates=[50.0, None, 70.0])
    assert list(agg)[:-1] == FORMULA_IDS
    assert agg["mif"] is None  # a missing IF rate is never skipped
    assert "mif" not in all_aggregates(WORKED)


def test_aliases_resolve_to_the_same_formula_and_variants_do_not():
    assert get_formula("MFN") is get_formula("ACC") is get_formula("ap")
    assert get_formula("MAA") is get_formula("map")
    assert get_formula("bwt@gem-code") is not get_formula("bwt")
    with pytest.raises(Exception, match="unknown continual-learning metric 'bwt@nowhere'"):
        get_formula("bwt@nowhere")


def test_mif_and_zero_shot_ap():
    assert mif([98.0, 97.0, 99.0]) == pytest.approx(98.0)
    assert mif([98.0, None]) is None
    assert mif([]) is None
    # SMoLoRA downstream AP is the plain mean of VizWiz, TextCaps (CIDEr ×100, averaged raw) and OCR-VQA
    assert zero_shot_ap([40.0, 30.0, 32.0]) == pytest.approx(34.0)
    assert zero_shot_ap([40.0, None, 32.0]) is None
    with pytest.raises(DataError, match="entry 2"):
        mif([1.0, float("nan")])


# ------------------------------------------------------------------------------------------------
# Published tables (docs/published-results.md)
# ------------------------------------------------------------------------------------------------

# Rounding bound for "mean of printed per-task values vs printed mean": every printed number is within
# h = 0.005 of its true value, so |mean(printed) − printed AP| ≤ h + h = 0.01. Beyond that plus float
# noise, the row is inconsistent.
AP_TOLERANCE = 0.01 + 1e-9

# docs/published-results.md: CVIT single-type and five-type, every complete row: six task scores, printed AP.
SMOLORA_SINGLE = {
    "Multitask": ([83.49, 61.93, 169.21, 96.53, 60.07, 65.80], 89.51),
    "Zero-shot": ([52.72, 2.95, 52.64, 22.10, 2.73, 0.65], 22.30),
    "DirLoRA": ([83.75, 60.66, 164.20, 96.71, 58.55, 64.93], 88.13),
    "SeqLoRA": ([55.31, 50.22, 33.89, 22.73, 50.52, 64.37], 46.21),
    "MoeLoRA": ([55.01, 48.87, 32.04, 22.00, 50.03, 63.64], 45.27),
    "EWC": ([57.04, 50.02, 32.96, 22.85, 50.16, 64.54], 46.26),
    "Replay": ([75.61, 47.58, 31.97, 35.84, 48.51, 58.67], 49.70),
    "DoRA": ([51.26, 46.36, 36.41, 28.24, 45.29, 56.87], 44.07),
    "SMoLoRA": ([77.36, 58.29, 151.99, 95.35, 51.96, 65.71], 83.44),
}
SMOLORA_FIVE = {
    "Multitask": ([82.83, 61.27, 175.97, 96.44, 59.67, 65.80], 90.33),
    "Zero-shot": ([51.85, 5.11, 44.05, 20.34, 2.37, 1.16], 20.81),
    "DirLoRA": ([83.85, 60.51, 164.66, 96.71, 57.93, 64.90], 88.09),
    "SeqLoRA": ([59.21, 50.80, 20.99, 20.30, 49.98, 64.41], 44.28),
    "MoeLoRA": ([58.09, 53.30, 22.82, 22.61, 51.80, 65.15], 45.63),
    "EWC": ([53.60, 49.07, 20.38, 20.48, 50.11, 64.63], 43.10),
}
# Documented transcription discrepancies (docs/published-results.md, CVIT single-type and five-type): the recomputed AP differs from the
# printed one by more than rounding allows. They stay visible here instead of being papered over.
KNOWN_AP_DISCREPANCIES = {("single", "SeqLoRA"): 46.1733, ("five", "EWC"): 43.0450}
CVIT_TASKS = ["scienceqa", "textvqa", "flickr30k", "imagenet", "gqa", "vqav2"]


def final_row_matrix(tasks: list[str], final: list[float]) -> AccuracyMatrix:
    """Only the final row is published; the matrix holds just that row (every other row absent)."""
    return AccuracyMatrix(tasks=tasks, stages=[str(len(tasks))], values=[final])


SMOLORA_CASES = [("single", k, *v) for k, v in SMOLORA_SINGLE.items()] + [("five", k, *v) for k, v in SMOLORA_FIVE.items()]


@pytest.mark.parametrize("block,method,final,printed_ap", SMOLORA_CASES, ids=[f"{c[0]}-{c[1]}" for c in SMOLORA_CASES])
def test_smolora_ap_recomputed_from_per_task_scores(block, method, final, printed_ap):
    m = final_row_matrix(CVIT_TASKS, final)
    ap = get_formula("ap")(m)
    if (block, method) in KNOWN_AP_DISCREPANCIES:
        assert ap == pytest.approx(KNOWN_AP_DISCREPANCIES[(block, method)], abs=1e-4)
        assert abs(ap - printed_ap) > AP_TOLERANCE, "a known discrepancy disappeared: update the caveat in docs/published-results.md"
    else:
        assert abs(ap - printed_ap) <= AP_TOLERANCE
    # everything beyond AP needs rows that were never published
    agg = all_aggregates(m)
    assert {k for k, v in agg.items() if v is not None} == {"ap", "bwt@he-code"}


def test_seqlora_iccv_vqav2_value_reproduces_the_printed_ap():
    final = list(SMOLORA_SINGLE["SeqLoRA"][0])
    final[5] = 64.61  # ICCV version per the secondhand note (docs/published-results.md)
    assert round(get_formula("ap")(final_row_matrix(CVIT_TASKS, final)), 2) == 46.21


def test_secondhand_tables_mean_of_final_row():
    eproj = [65.29, 52.87, 148.19, 39.45, 28.06, 57.86]  # printed AP 65.29
    assert abs(get_formula("ap")(final_row_matrix(CVIT_TASKS, eproj)) - 65.29) <= AP_TOLERANCE
    coin_tasks = ["scienceqa", "imagenet", "vizwiz", "grounding", "textvqa", "gqa", "vqav2", "ocrvqa"]
    phidpo = {  # CoIN as re-tabulated by ϕ-DPO: eight final-row scores, printed MFN
        "FineTune": ([57.43, 28.90, 41.88, 30.05, 51.39, 50.76, 53.28, 64.78], 47.31),
        "LwF": ([60.71, 30.58, 41.49, 36.01, 52.80, 47.07, 53.43, 65.12], 48.40),
        "EWC": ([59.75, 31.88, 42.26, 34.96, 51.06, 51.84, 55.30, 64.55], 48.95),
        "L2P": ([70.21, 23.31, 44.21, 43.76, 56.25, 58.46, 62.32, 64.11], 52.83),
        "O-LoRA": ([72.56, 62.84, 48.43, 58.97, 57.66, 59.14, 63.21, 63.31], 60.77),
        "MoELoRA": ([62.02, 37.21, 43.32, 33.22, 52.05, 53.12, 57.92, 65.75], 50.58),
        "HiDe": ([73.20, 69.28, 50.76, 59.18, 56.92, 61.33, 67.12, 64.76], 62.82),
        "phi-DPO": ([77.84, 95.61, 54.55, 60.74, 59.17, 64.32, 69.99, 68.69], 68.86),
    }
    for method, (final, mfn) in phidpo.items():
        assert abs(get_formula("mfn")(final_row_matrix(coin_tasks, final)) - mfn) <= AP_TOLERANCE, method


# MLLM-CL rows (docs/published-results.md): final row, MFT, MFN, BWT.
DOMAIN = ["rs", "med", "ad", "sci", "fin"]
ABILITY = ["ocr", "m&l", "vp", "gui"]
MLLMCL_ROWS = {
    "domain/LoRA-FT": (DOMAIN, [69.65, 41.59, 25.43, 40.88, 87.45], 64.98, 53.00, -14.97),
    "domain/O-LoRA": (DOMAIN, [74.64, 44.42, 30.02, 41.47, 87.15], 65.16, 55.54, -12.03),
    "domain/MoELoRA": (DOMAIN, [77.54, 41.85, 27.62, 40.13, 86.75], 64.94, 54.78, -12.70),
    "domain/CL-MoE": (DOMAIN, [71.34, 46.84, 26.33, 41.17, 88.74], 66.06, 54.88, -13.96),
    "domain/HiDe": (DOMAIN, [74.31, 48.95, 33.21, 38.54, 81.55], 60.77, 55.31, -6.82),
    "domain/SEFE": (DOMAIN, [77.26, 50.37, 37.21, 40.87, 86.82], 65.01, 58.51, -8.13),
    "domain/DISCO": (DOMAIN, [76.03, 45.20, 43.79, 42.33, 88.95], 64.43, 59.26, -6.46),
    "domain/MR-LoRA": (DOMAIN, [80.87, 65.32, 54.12, 56.71, 91.12], 69.64, 69.63, -0.01),
    "domain/LoRA-FT*": (DOMAIN, [76.54, 50.27, 43.01, 43.32, 89.85], 66.32, 60.60, -7.15),
    "domain/DISCO*": (DOMAIN, [77.78, 46.25, 50.45, 49.51, 89.71], 65.27, 62.74, -3.17),
    "ability/LoRA-FT": (ABILITY, [23.60, 33.70, 55.84, 32.50], 41.28, 36.41, -6.49),
    "ability/MR-LoRA": (ABILITY, [33.70, 36.20, 65.10, 32.50], 41.89, 41.88, -0.02),
}


def test_identity_tolerance_is_derived_from_two_decimal_rounding():
    # h = 0.005 per printed number: |residual| ≤ 2h + ((T−1)/T)·h; T = 5 → 0.014, i.e. 0.0175 on the BWT scale,
    # which is inside the looser 3h·T/(T−1) = 0.01875 quoted with the table.
    assert identity_tolerance(5) == pytest.approx(0.014)
    assert identity_tolerance(5) * 5 / 4 == pytest.approx(0.0175)
    assert identity_tolerance(4) == pytest.approx(0.01375)
    for T in range(2, 12):
        assert identity_tolerance(T) * T / (T - 1) <= 0.015 * T / (T - 1)


@pytest.mark.parametrize("row", sorted(MLLMCL_ROWS))
def test_identity_holds_on_published_mllmcl_rows(row):
    tasks, final, mft, mfn, bwt = MLLMCL_ROWS[row]
    T = len(tasks)
    residual = identity_residual(mfn, mft, bwt, T)
    assert abs(residual) <= identity_tolerance(T) + 1e-9
    # a BWT off by 0.05 (more than rounding can explain) is caught
    assert abs(identity_residual(mfn, mft, bwt + 0.05, T)) > identity_tolerance(T)
    # MFN is the mean of the published final row
    assert abs(get_formula("mfn")(final_row_matrix(tasks, final)) - mfn) <= AP_TOLERANCE


# ------------------------------------------------------------------------------------------------
# Missing cells (docs/continual-metrics.md) and degenerate sizes
# ------------------------------------------------------------------------------------------------


def needed_cells(formula_id: str, T: int) -> set[tuple[int, int]]:
    """Which (stage, task) cells each formula reads, written from docs/continual-metrics.md independently of the code."""
    lower = {(t, i) for t in range(1, T + 1) for i in range(1, t + 1)}
    diag_final = {(i, i) for i in range(1, T)} | {(T, i) for i in range(1, T)}
    superdiag_zero = {(i - 1, i) for i in range(2, T + 1)} | {(0, i) for i in range(2, T + 1)}
    column_tails = {(l, i) for i in range(1, T) for l in range(i, T + 1)}
    return {
        "ap": {(T, i) for i in range(1, T + 1)},
        "mft": {(i, i) for i in range(1, T + 1)},
        "map": lower,
        "bwt": diag_final,
        "bwt@gem-code": diag_final,
        "forgetting_first": diag_final,
        "fwt": superdiag_zero,
        "fwt@gem-code": superdiag_zero,
        "forgetting_max": column_tails,
        "forgetting_max@clipped": column_tails,
        "bwt@he-code": {(T, i) for i in range(1, T + 1)},
    }[formula_id]


def with_null(m: AccuracyMatrix, stage: int, task: int) -> AccuracyMatrix:
    values = [list(r) for r in m.values]
    values[m.stages.index(str(stage))][task - 1] = None
    return AccuracyMatrix(tasks=m.tasks, stages=m.stages, values=values)


score = st.floats(min_value=0, max_value=200, allow_nan=False, allow_infinity=False)


@st.composite
def full_matrices(draw, min_T=2, max_T=5):
    T = draw(st.integers(min_T, max_T))
    values = [[draw(score) for _ in range(T)] for _ in range(T + 1)]
    return AccuracyMatrix([f"t{j}" for j in range(1, T + 1)], [str(s) for s in range(T + 1)], values)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=full_matrices(), data=st.data())
def test_a_null_cell_propagates_exactly_to_the_formulas_that_need_it(m, data):
    T = m.n_tasks
    stage = data.draw(st.integers(0, T))
    task = data.draw(st.integers(1, T))
    holed = with_null(m, stage, task)
    for fid in FORMULA_IDS:
        before, after = CL_METRICS.get(fid)(m), CL_METRICS.get(fid)(holed)
        assert before is not None
        if (stage, task) in needed_cells(fid, T):
            assert after is None, (fid, stage, task)
        elif fid == "bwt@he-code":
            assert after is not None  # max over evaluated cells only: may change, never null
        else:
            assert after == before, (fid, stage, task)


def test_nulls_are_never_zero():
    m = AccuracyMatrix(["a", "b"], ["1", "2"], [[80.0, None], [None, 60.0]])
    assert get_formula("ap")(m) is None
    assert get_formula("bwt")(m) is None
    assert get_formula("mft")(m) == pytest.approx(70.0)
    assert get_formula("fwt")(m) is None  # no zero-shot row
    assert summarize(m)["MAP"] is None
    assert identity_check(m) is None


def test_prefix_run_without_final_row_has_no_final_aggregates():
    m = AccuracyMatrix(["a", "b", "c"], ["1", "2"], [[80.0, None, None], [70.0, 60.0, None]])
    agg = all_aggregates(m)
    assert agg["ap"] is None and agg["bwt"] is None and agg["map"] is None
    assert running_means(m) == [80.0, 65.0, None]


def test_single_task_matrix():
    m = AccuracyMatrix(["a"], ["0", "1"], [[10.0], [70.0]])
    agg = all_aggregates(m)
    assert agg["ap"] == agg["mft"] == agg["map"] == 70.0
    for fid in ("bwt", "fwt", "forgetting_first", "forgetting_max", "forgetting_max@clipped"):
        assert agg[fid] is None, fid  # divide by T − 1 = 0
    assert agg["bwt@gem-code"] == 0.0 and agg["fwt@gem-code"] == 0.0  # GEM code: mean of one structural zero
    assert agg["bwt@he-code"] == 0.0
    assert identity_check(m) == 0.0


def test_variants_differ_where_the_spec_says_they_do():
    # positive backward transfer on task 1: the plain max-based term is negative, the clipped one is 0;
    # a zero-shot score above every later score counts for he-code only.
    m = AccuracyMatrix(["a", "b"], ["0", "1", "2"], [[90.0, 0.0], [60.0, 0.0], [70.0, 50.0]])
    assert get_formula("forgetting_max")(m) == pytest.approx(-10.0)
    assert get_formula("forgetting_max@clipped")(m) == 0.0
    assert get_formula("bwt")(m) == pytest.approx(10.0)
    assert get_formula("bwt@he-code")(m) == pytest.approx(((70 - 90) + (50 - 50)) / 2)


# ------------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 6), column_values=st.data())
def test_constant_columns_mean_no_forgetting(T, column_values):
    cols = [column_values.draw(score) for _ in range(T)]
    m = AccuracyMatrix([f"t{j}" for j in range(T)], [str(s) for s in range(T + 1)], [list(cols) for _ in range(T + 1)])
    agg = all_aggregates(m)
    for fid in ("bwt", "forgetting_first", "forgetting_max", "forgetting_max@clipped", "bwt@gem-code", "bwt@he-code"):
        assert agg[fid] in (None, 0.0) if T == 1 else agg[fid] == pytest.approx(0.0, abs=1e-9), fid
    assert agg["ap"] == pytest.approx(agg["mft"])


@st.composite
def lower_triangular(draw, min_T=1, max_T=7):
    T = draw(st.integers(min_T, max_T))
    values = [[draw(score) if i <= t else None for i in range(1, T + 1)] for t in range(1, T + 1)]
    return AccuracyMatrix([f"t{j}" for j in range(T)], [str(t) for t in range(1, T + 1)], values)


@settings(max_examples=80, deadline=None)
@given(m=lower_triangular())
def test_identity_and_relations_on_random_lower_triangular_matrices(m):
    T = m.n_tasks
    agg = all_aggregates(m)
    assert identity_check(m) == pytest.approx(0.0, abs=1e-9)
    final = m.row(T)
    assert min(final) - 1e-9 <= agg["ap"] <= max(final) + 1e-9
    lower = [v for r in m.values for v in r if v is not None]
    assert min(lower) - 1e-9 <= agg["map"] <= max(lower) + 1e-9
    assert agg["fwt"] is None  # no zero-shot row, no super-diagonal
    assert agg["bwt@he-code"] <= 1e-9
    if T >= 2:
        assert agg["forgetting_first"] == pytest.approx(-agg["bwt"])
        assert agg["bwt@gem-code"] == pytest.approx((T - 1) / T * agg["bwt"], abs=1e-9)
        assert agg["forgetting_max"] >= agg["forgetting_first"] - 1e-9
        assert agg["forgetting_max@clipped"] >= max(agg["forgetting_max"], 0.0) - 1e-9


# ------------------------------------------------------------------------------------------------
# Validation and loading
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stages,values,message",
    [
        (["1", "2"], [[1.0, 2.0], [3.0]], "ragged row: 1 values for 2 tasks"),
        (["1", "2"], [[1.0, float("nan")], [3.0, 4.0]], "not finite"),
        (["1", "final"], [[1.0, 2.0], [3.0, 4.0]], "unknown stage label 'final'"),
        (["1", "3"], [[1.0, 2.0], [3.0, 4.0]], "unknown stage label '3'"),
        (["1", "2", "3"], [[1.0, 2.0]] * 3, "3 upstream stage rows but only 2 task columns"),
        (["2", "1"], [[1.0, 2.0]] * 2, "must be in order"),
        (["1", "0"], [[1.0, 2.0]] * 2, "must be in order"),
        (["1", "1"], [[1.0, 2.0]] * 2, "duplicate stage rows: 1"),
        (["1"], [[True, 2.0]], "not a number"),
        (["1"], [["80", 2.0]], "not a number"),
        (["1"], [], "0 rows of values for 1 stage labels"),
    ],
)
def test_matrix_validation(stages, values, message):
    with pytest.raises(DataError, match=message):
        AccuracyMatrix(["a", "b"], stages, values)


def test_validation_names_the_row_and_column():
    with pytest.raises(DataError) as exc:
        AccuracyMatrix(["a", "b"], ["0", "1"], [[1.0, 2.0], [3.0, float("inf")]])
    assert exc.value.record == "stage 1" and exc.value.field == "b"


def test_labels_are_normalised():
    m = AccuracyMatrix(["a", "b"], [0, "01", " 2 "], [[1, 2], [3, 4], [5, 6]])
    assert m.stages == ["0", "1", "2"]
    assert m.values[2] == [5.0, 6.0] and isinstance(m.values[2][0], float)
    assert m.cell(0, 2) == 2.0 and m.cell(2, 1) == 5.0


def test_load_csv_with_empty_cells(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("stage,task1,task2,task3\n0,5,8,15\n1,80,10,20\n2,85,70,30\n3,50,65,90\n")
    assert load_matrix(path) == WORKED
    path.write_text("after \\ on, a , b\n1,80,\n\n2, 70 ,60\n")
    m = load_matrix(path)
    assert m.tasks == ["a", "b"] and m.values == [[80.0, None], [70.0, 60.0]]
    assert get_formula("bwt")(m) == pytest.approx(-10.0)


def test_load_json_and_results_json(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(WORKED.to_dict()))
    assert load_matrix(path) == WORKED
    results = {"schema_version": 1, "matrix": {**WORKED.to_dict(), "metrics": ["x"] * 3}, "summary": {}}
    path.write_text(json.dumps(results))
    assert all_aggregates(load_matrix(path)) == all_aggregates(WORKED)


def test_csv_errors_name_file_row_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("stage,a,b\n1,80,n/a\n")
    with pytest.raises(DataError) as exc:
        load_matrix(path)
    assert str(exc.value) == f"{path}: record row 2 (stage 1): field 'b': cell 'n/a' is not a number (leave the cell empty for 'not evaluated')"
    path.write_text("stage,a,b\n1,80\n")
    with pytest.raises(DataError, match=r"bad.csv: record row 2 \(stage 1\): 2 cells but the header has 3"):
        load_matrix(path)
    path.write_text("stage,a,b\n1,80,nan\n")
    with pytest.raises(DataError, match=r"bad.csv: record stage 1: field 'b': .*not finite"):
        load_matrix(path)
    path.write_text("stage,a,\n1,80,1\n")
    with pytest.raises(DataError, match="header cell 3 is empty"):
        load_matrix(path)
    path.write_text("stage,a,b\n5,80,1\n")
    with pytest.raises(DataError, match=r"bad.csv: record row 1: field 'stages': unknown stage label '5'"):
        load_matrix(path)


def test_json_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"tasks": ["a"], "stages": ["1"], "values": [[NaN]]}')
    with pytest.raises(DataError, match=r"bad.json: record stage 1: field 'a': .*not finite"):
        load_matrix(path)
    path.write_text('{"tasks": ["a"], "values": [[1]]}')
    with pytest.raises(DataError, match=r"bad.json: field 'stages': required key missing"):
        load_matrix(path)
    path.write_text('{"tasks": ')
    with pytest.raises(DataError, match="malformed JSON at line 1"):
        load_matrix(path)
    with pytest.raises(MissingFileError, match="accuracy matrix"):
        load_matrix(tmp_path / "absent.csv")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(Exception, match="unknown matrix format '.txt'"):
        load_matrix(tmp_path / "m.txt")


def test_no_nan_can_hide_in_an_aggregate():
    for fid in FORMULA_IDS:
        v = CL_METRICS.get(fid)(WORKED)
        assert v is None or math.isfinite(v)
