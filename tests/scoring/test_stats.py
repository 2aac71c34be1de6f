"""Clustered standard errors and the paired stage-vs-final test (cvit_bench.scoring.stats)."""
from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvit_bench.scoring.stats import PairedTest, clustered_se, mcnemar_exact_p, paired_test

# ------------------------------------------------------------------------------------------------
# Clustered SE
# ------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 100, allow_nan=False, allow_infinity=False), min_size=2, max_size=40))
def test_without_clustering_it_is_the_textbook_se(values):
    textbook = float(np.std(values, ddof=1)) / math.sqrt(len(values))
    assert clustered_se(values) == pytest.approx(textbook, rel=1e-9, abs=1e-12)
    # distinct keys, one sample each, is the same thing
    assert clustered_se(values, [f"img{k}" for k in range(len(values))]) == pytest.approx(textbook, rel=1e-9, abs=1e-12)


def test_hand_computed_clustered_se():
    # mean 0.75; residuals .25, −.75 | .25 | .25; cluster sums −.5, .25, .25; Σ S² = .375
    # Var = G/(G−1) · Σ S² / n² = 3/2 · .375 / 16 = 0.03515625 → SE = 0.1875
    assert clustered_se([1, 0, 1, 1], ["a", "a", "b", "c"]) == pytest.approx(0.1875, abs=1e-12)
    # unclustered: s² = 0.25, SE = sqrt(.25/4) = 0.25
    assert clustered_se([1, 0, 1, 1]) == pytest.approx(0.25, abs=1e-12)


def test_duplicated_samples_widen_the_se():
    rng = np.random.default_rng(7)
    base = [float(v) for v in rng.integers(0, 2, 50) * 100]
    images = [f"img{k}" for k in range(50)]
    dup_values, dup_images = base + base, images + images          # each image asked twice, same outcome
    naive = clustered_se(dup_values)                               # pretends 100 independent samples
    clustered = clustered_se(dup_values, dup_images)
    assert clustered > naive * 1.3
    # the duplicates add no information: the clustered SE is the SE of the 50 distinct samples
    assert clustered == pytest.approx(clustered_se(base), rel=1e-9)


def test_none_values_are_dropped_with_their_cluster_key():
    assert clustered_se([1.0, None, 0.0, 1.0], ["a", "b", "c", "d"]) == pytest.approx(clustered_se([1.0, 0.0, 1.0]))
    # None cluster key = a text-only sample, its own cluster
    assert clustered_se([1.0, 0.0, 1.0], [None, None, None]) == pytest.approx(clustered_se([1.0, 0.0, 1.0]))


def test_se_not_estimable():
    assert clustered_se([]) is None
    assert clustered_se([50.0]) is None
    assert clustered_se([50.0, None]) is None
    assert clustered_se([1.0, 0.0, 1.0], ["same", "same", "same"]) is None  # one cluster
    with pytest.raises(ValueError, match="3 values but 2 cluster keys"):
        clustered_se([1.0, 0.0, 1.0], ["a", "b"])
    with pytest.raises(ValueError, match=r"values\[1\] = nan"):
        clustered_se([1.0, float("nan")])


# ------------------------------------------------------------------------------------------------
# McNemar
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "b,c,expected",
    [
        (0, 0, 1.0),
        (0, 5, 2 / 32),                       # 2 · C(5,0) / 2^5
        (5, 0, 2 / 32),
        (1, 5, 2 * 7 / 64),                   # 2 · (1 + 6) / 2^6
        (2, 2, 1.0),                          # 2 · 11/16 > 1 → 1
        (3, 10, 2 * (1 + 13 + 78 + 286) / 8192),
        (0, 1, 1.0),
    ],
)
def test_mcnemar_hand_computed(b, c, expected):
    assert mcnemar_exact_p(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_large_counts_stay_finite_and_symmetric():
    p = mcnemar_exact_p(5000, 5200)
    assert 0.0 < p < 0.1 and p == mcnemar_exact_p(5200, 5000)
    assert mcnemar_exact_p(5000, 5000) == 1.0


def test_paired_binary_scores_use_mcnemar_on_the_percent_scale():
    # stage i right (100) → final wrong (0): b = 1; wrong → right: c = 5; two concordant pairs
    stage = [100, 0, 0, 0, 0, 0, 100, 0]
    final = [0, 100, 100, 100, 100, 100, 100, 0]
    r = paired_test(stage, final)
    assert r == PairedTest("mcnemar-exact", delta=(600 - 200) / 8, n=8, p_value=2 * 7 / 64, n_discordant=6)
    assert r.to_dict()["test"] == "mcnemar-exact"
    # the same on a 0/1 scale: same p, delta on that scale
    r01 = paired_test([s / 100 for s in stage], [f / 100 for f in final])
    assert r01.p_value == r.p_value and r01.delta == pytest.approx(0.5)


def test_pairs_with_a_missing_side_are_dropped():
    r = paired_test([1, None, 0, 1], [0, 1, None, 0])
    assert r.n == 2 and r.n_discordant == 2 and r.delta == -1.0 and r.p_value == 0.5
    assert paired_test([None], [1.0]) is None
    with pytest.raises(ValueError, match="2 stage scores but 1 final scores"):
        paired_test([1, 0], [1])


def test_identical_scores_give_p_one():
    assert paired_test([1, 0, 1], [1, 0, 1]).p_value == 1.0
    same = paired_test([30.0, 60.0, 90.0], [30.0, 60.0, 90.0])
    assert same.test == "sign-flip-exact" and same.p_value == 1.0 and same.delta == 0.0


# ------------------------------------------------------------------------------------------------
# Sign-flip permutation test
# ------------------------------------------------------------------------------------------------


def test_sign_flip_exact_hand_computed():
    # d = (1, 2, 3): of the 8 sign patterns only (+,+,+) and (−,−,−) reach |Σ| = 6 → p = 2/8
    r = paired_test([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert (r.test, r.n, r.p_value, r.delta) == ("sign-flip-exact", 3, 0.25, 2.0)
    # d = (1, −1, 2): |Σ| = 2; patterns with |Σ| ≥ 2: ±(1,−1,2)=2, ±(−1,1,2)=2, ±(1,1,2)=4 → 6/8
    r = paired_test([10.0, 11.0, 10.0], [11.0, 10.0, 12.0])
    assert r.p_value == 0.75 and r.n_discordant == 3


def brute_force_sign_flip(d):
    d = [x for x in d if x != 0]
    obs = abs(sum(d))
    hits = sum(abs(sum(s * x for s, x in zip(signs, d))) >= obs - 1e-9 for signs in product((1, -1), repeat=len(d)))
    return hits / 2 ** len(d)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10), st.integers(0, 10)), min_size=1, max_size=10))
def test_exact_sign_flip_matches_brute_force(pairs):
    stage = [10.0 * a for a, _ in pairs] + [30.0]   # a third level forces the permutation branch
    final = [10.0 * b for _, b in pairs] + [30.0]
    r = paired_test(stage, final)
    if r.test == "mcnemar-exact":  # only two levels after all
        return
    assert r.p_value == pytest.approx(brute_force_sign_flip([f - s for s, f in zip(stage, final)]), abs=1e-12)


def test_sampled_sign_flip_is_reproducible_and_close_to_exact():
    rng = np.random.default_rng(3)
    stage = list(rng.integers(0, 11, 14) * 10.0)
    final = [min(100.0, s + float(rng.choice([-30, -10, 10, 20, 40]))) for s in stage]
    exact = paired_test(stage, final)
    assert exact.test == "sign-flip-exact"
    sampled = paired_test(stage, final, exact_max=0, n_resamples=20_000, seed=11)
    assert sampled.test == "sign-flip-permutation" and sampled.seed == 11 and sampled.n_resamples == 20_000
    assert sampled.p_value == paired_test(stage, final, exact_max=0, n_resamples=20_000, seed=11).p_value
    assert abs(sampled.p_value - exact.p_value) < 0.02


def test_sampled_sign_flip_detects_a_real_shift_and_not_noise():
    rng = np.random.default_rng(5)
    stage = list(rng.integers(0, 11, 400) * 10.0)
    shifted = [min(100.0, s + 10.0) if k % 2 else s for k, s in enumerate(stage)]
    r = paired_test(stage, shifted, n_resamples=2000)
    assert r.test == "sign-flip-permutation" and r.p_value == pytest.approx(1 / 2001)
    noise = [s + float(rng.choice([-10.0, 10.0])) for s in stage]
    assert paired_test(stage, noise, n_resamples=2000).p_value > 0.01
