"""Several seeds, one row: entries of one method that differ only in their training seed, aggregated.

A **seed group** = the entries of one board (same benchmark, template set, base model, profile) with the same
method name, the same tier and kind, and a ``seed`` (meta.yaml) each, at least two distinct seeds. The site
shows the group as one row: for every column the mean over seeds ± the half-width of its 95 % confidence
interval, ``t(0.975, n-1) · s / √n`` (Student's t, sample standard deviation s), and the number of seeds; each
seed's own entry page stays reachable from the row. A column where some seed has no value shows the mean of
the others with their n. Entries without a seed, or alone with their seed, stay ordinary rows.
If two entries of a group carry the same seed (a resubmission with other checkpoints), both count: the board
cannot tell which one is the run of that seed, and hiding one would be a silent choice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .board import Entry

# Student's t 97.5 % quantiles for 1..30 degrees of freedom (standard tables), then 1.96 + corrections.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    if df < 1:
        raise ValueError("a confidence interval needs at least two values")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964                                 # Cornish-Fisher expansion, error < 1e-3 beyond 30 df
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class MeanCI:
    mean: float
    half_width: float | None                     # None with a single value
    n: int


def mean_ci(values: list[float]) -> MeanCI | None:
    """Mean ± 95 % CI half-width of ``values`` (None when there is none)."""
    if not values:
        return None
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return MeanCI(mean, None, 1)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return MeanCI(mean, t975(n - 1) * sd / math.sqrt(n), n)


@dataclass(frozen=True)
class SeedGroup:
    entries: tuple[Entry, ...]                   # ordered by seed

    @property
    def seeds(self) -> list[int]:
        return [int(e.seed) for e in self.entries if e.seed is not None]

    def column(self, values: list[float | None]) -> MeanCI | None:
        return mean_ci([float(v) for v in values if isinstance(v, (int, float))])

    def task(self, name: str) -> MeanCI | None:
        return self.column([e.final_row.get(name) for e in self.entries])

    def summary(self, key: str) -> MeanCI | None:
        return self.column([e.summary.get(key) for e in self.entries])

    def as_entry(self) -> Entry:
        """One entry standing for the group (means), so ranking and sorting treat the row like any other."""
        first = self.entries[0]
        tasks = [t for e in self.entries for t in e.tasks]
        tasks = list(dict.fromkeys(tasks))
        keys = list(dict.fromkeys(k for e in self.entries for k in e.summary))
        mean = lambda ci: None if ci is None else ci.mean  # noqa: E731
        return replace(first, id=f"{first.id}--seeds", tasks=tasks, seed=None,
                       final_row={t: mean(self.task(t)) for t in tasks},
                       summary={k: mean(self.summary(k)) for k in keys},
                       summary_status={k: "mean over seeds" for k in keys},
                       flags=[f for e in self.entries for f in e.flags])


def split_seed_groups(entries: list[Entry]) -> tuple[list[Entry], list[SeedGroup]]:
    """(entries shown on their own, seed groups) of one board's entries."""
    buckets: dict[tuple[str, str, str], list[Entry]] = {}
    singles = []
    for e in entries:
        if e.seed is None:
            singles.append(e)
        else:
            buckets.setdefault((e.name, e.tier, e.kind), []).append(e)
    groups = []
    for members in buckets.values():
        if len({m.seed for m in members}) >= 2:
            groups.append(SeedGroup(tuple(sorted(members, key=lambda m: (m.seed, m.id)))))
        else:
            singles.extend(members)
    return singles, groups
