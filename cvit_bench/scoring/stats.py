"""Uncertainty of one cell and a paired comparison of two stages on the same samples (pure numpy).

Per-sample inputs are lists of floats on the metric's scale (0/100 for an exact match in percent, VQA soft
scores 0..100, CIDEr ×100), aligned by sample; ``None`` entries are dropped (pairwise for the paired test).

**Clustered standard error of a mean.** Samples that share an image are not independent (VQAv2 asks several
questions per image), so the SE is cluster-robust (CR1, Liang–Zeger with the usual small-sample factor):
with ȳ the mean of the n values, G clusters and S_g = Σ_{k ∈ g} (y_k − ȳ) the residual sum of cluster g,

    Var(ȳ) = G/(G−1) · Σ_g S_g² / n²,   SE = √Var(ȳ).

When every cluster holds one sample (G = n) this is Σ (y_k − ȳ)² / (n(n−1)) = s²/n, the textbook SE. It is
``None`` when n < 2 or G < 2 (a variance cannot be estimated from one cluster).

**Paired test, stage i vs the final stage.** Same samples, two scores each; delta = mean(final) − mean(stage)
on the metric's scale.

* Binary scores (the pooled values take at most two distinct levels, e.g. {0, 100} or {0, 1}): exact
  McNemar — under H0 the b discordant pairs "right at stage i, wrong at the end" and c "wrong, then right"
  split as Binomial(b + c, ½); p = min(1, 2 · P[X ≤ min(b, c)]), computed exactly with integers.
* Otherwise: paired sign-flip permutation test on d_k = final_k − stage_k with statistic |mean(d)|. Exact
  (all 2^m sign patterns of the m non-zero differences) when m ≤ ``exact_max``; else ``n_resamples`` random
  sign patterns from ``numpy.random.default_rng(seed)``, p = (1 + #{|stat*| ≥ |stat|}) / (1 + R) so that p
  is never 0 and the result is reproducible.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np

DEFAULT_SEED = 0
DEFAULT_RESAMPLES = 10_000
DEFAULT_EXACT_MAX = 16          # 2^16 sign patterns, a few MB, instant
_TIE_RTOL = 1e-9                 # permutation statistics equal to the observed one up to float noise count as ≥


def _finite(values: Sequence[float], what: str) -> None:
    for k, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{what}[{k}] = {v!r} is not a finite number (use None for 'not scored')")


def clustered_se(values: Sequence[float | None], clusters: Sequence[Hashable | None] | None = None) -> float | None:
    """CR1 cluster-robust standard error of the mean of ``values`` (formula in the module docstring).

    ``clusters[k]`` is the cluster key of sample k (its image path); ``None`` or ``clusters=None`` makes the
    sample its own cluster (text-only samples). ``None`` values are dropped with their cluster key.
    """
    if clusters is not None and len(clusters) != len(values):
        raise ValueError(f"{len(values)} values but {len(clusters)} cluster keys")
    keep = [k for k, v in enumerate(values) if v is not None]
    y = [values[k] for k in keep]
    _finite(y, "values")
    n = len(y)
    if n < 2:
        return None
    ids: list[Hashable] = []
    for k in keep:
        key = None if clusters is None else clusters[k]
        ids.append(("singleton", k) if key is None else ("key", key))
    index: dict[Hashable, int] = {}
    groups = np.array([index.setdefault(i, len(index)) for i in ids], dtype=np.int64)
    G = len(index)
    if G < 2:
        return None
    arr = np.asarray(y, dtype=np.float64)
    resid = arr - arr.mean()
    sums = np.bincount(groups, weights=resid, minlength=G)
    var = G / (G - 1) * float(np.sum(sums * sums)) / (n * n)
    return math.sqrt(var)


@dataclass(frozen=True)
class PairedTest:
    """Result of :func:`paired_test`: ``delta`` = mean(final) − mean(stage) on the metric's scale, ``n`` the
    number of complete pairs, ``test`` one of ``mcnemar-exact``, ``sign-flip-exact``, ``sign-flip-permutation``.
    For McNemar, ``n_discordant`` = b + c; for the sign-flip tests, the number of non-zero differences."""

    test: str
    delta: float
    n: int
    p_value: float
    n_discordant: int
    n_resamples: int | None = None
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: min(1, 2 · Σ_{k=0..min(b,c)} C(b+c, k) / 2^(b+c)); 1 when b + c = 0."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be ≥ 0")
    n = b + c
    if n == 0:
        return 1.0
    term, tail = 1, 1                     # C(n, 0)
    for k in range(min(b, c)):
        term = term * (n - k) // (k + 1)  # C(n, k + 1), exact
        tail += term
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def _sign_flip_exact(d: np.ndarray) -> float:
    m = d.size
    patterns = ((np.arange(2**m)[:, None] >> np.arange(m)) & 1) * 2 - 1   # every ±1 pattern, one per row
    stats = np.abs(patterns @ d)
    observed = abs(float(d.sum()))
    return float(np.count_nonzero(stats >= observed * (1 - _TIE_RTOL))) / 2**m


def _sign_flip_sampled(d: np.ndarray, n_resamples: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    observed = abs(float(d.sum()))
    chunk = max(1, 4_000_000 // d.size)    # bound the sign matrix to ~4M entries
    hits, done = 0, 0
    while done < n_resamples:
        r = min(chunk, n_resamples - done)
        signs = rng.integers(0, 2, size=(r, d.size), dtype=np.int8) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed * (1 - _TIE_RTOL)))
        done += r
    return (1 + hits) / (1 + n_resamples)


def paired_test(
    stage_scores: Sequence[float | None],
    final_scores: Sequence[float | None],
    *,
    seed: int = DEFAULT_SEED,
    n_resamples: int = DEFAULT_RESAMPLES,
    exact_max: int = DEFAULT_EXACT_MAX,
) -> PairedTest | None:
    """Compare the same samples scored after stage i (``stage_scores``) and after the final stage.

    Pairs with a ``None`` on either side are dropped; ``None`` when no pair is left. Binary data → exact
    McNemar, otherwise a sign-flip permutation test (exact up to ``exact_max`` non-zero differences).
    """
    if len(stage_scores) != len(final_scores):
        raise ValueError(f"{len(stage_scores)} stage scores but {len(final_scores)} final scores")
    pairs = [(s, f) for s, f in zip(stage_scores, final_scores) if s is not None and f is not None]
    if not pairs:
        return None
    x = [p[0] for p in pairs]
    y = [p[1] for p in pairs]
    _finite(x, "stage_scores")
    _finite(y, "final_scores")
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(pairs)
    delta = float(ys.mean() - xs.mean())
    levels = np.unique(np.concatenate([xs, ys]))
    if levels.size <= 2:
        hi = levels.max()
        b = int(np.count_nonzero((xs == hi) & (ys != hi)))   # right at stage i, wrong at the end
        c = int(np.count_nonzero((xs != hi) & (ys == hi)))   # wrong at stage i, right at the end
        return PairedTest("mcnemar-exact", delta, n, mcnemar_exact_p(b, c), b + c)
    d = ys - xs
    d = d[d != 0]
    m = int(d.size)
    if m == 0:
        return PairedTest("sign-flip-exact", delta, n, 1.0, 0)
    if m <= exact_max:
        return PairedTest("sign-flip-exact", delta, n, _sign_flip_exact(d), m)
    p = _sign_flip_sampled(d, n_resamples, seed)
    return PairedTest("sign-flip-permutation", delta, n, p, m, n_resamples=n_resamples, seed=seed)
