"""cvit_bench.scoring.stats checked against the reference implementations (scipy, statsmodels; test-only dependencies):
the CR1 clustered SE equals statsmodels' cluster-robust SE of an intercept-only OLS, the exact McNemar p equals
statsmodels' exact McNemar and scipy's two-sided binomial test, the exact sign-flip test equals scipy's
permutation test of |mean| over every sign pattern."""
from __future__ import annotations

import numpy as np
import pytest

from cvit_bench.scoring.stats import clustered_se, mcnemar_exact_p, paired_test

import scipy.stats  # noqa: E402
import statsmodels.api as statsmodels  # noqa: E402
from statsmodels.stats.contingency_tables import mcnemar  # noqa: E402


@pytest.mark.parametrize("seed", range(5))
def test_clustered_se_equals_statsmodels_cluster_robust_ols(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    clusters = rng.integers(0, max(2, n // 3), size=n)
    y = rng.choice([0.0, 100.0], size=n) if seed % 2 else rng.uniform(0, 100, size=n)
    fit = statsmodels.OLS(y, np.ones((n, 1))).fit(cov_type="cluster", cov_kwds={"groups": clusters})
    assert clustered_se(list(y), list(clusters)) == pytest.approx(float(fit.bse[0]), rel=1e-10)
    # one sample per cluster: the textbook s / sqrt(n)
    assert clustered_se(list(y)) == pytest.approx(float(np.std(y, ddof=1) / np.sqrt(n)), rel=1e-10)


@pytest.mark.parametrize("b,c", [(0, 0), (0, 5), (3, 9), (12, 12), (40, 25), (1, 60)])
def test_mcnemar_exact_equals_statsmodels_and_scipy(b, c):
    ours = mcnemar_exact_p(b, c)
    assert ours == pytest.approx(mcnemar([[10, b], [c, 10]], exact=True).pvalue, rel=1e-12)
    if b + c:
        assert ours == pytest.approx(scipy.stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_exact_sign_flip_equals_scipy_permutation_test(seed):
    rng = np.random.default_rng(seed)
    n = 12
    stage = rng.uniform(0, 100, size=n)
    final = stage + rng.normal(5, 20, size=n)
    res = paired_test(list(stage), list(final))
    assert res.test == "sign-flip-exact"
    d = final - stage
    ref = scipy.stats.permutation_test((d,), lambda x, axis: np.abs(np.mean(x, axis=axis)),
                                       permutation_type="samples", alternative="greater", n_resamples=np.inf,
                                       vectorized=True)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert res.delta == pytest.approx(float(np.mean(d)), rel=1e-12)
