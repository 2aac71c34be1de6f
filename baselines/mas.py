"""MAS, memory-aware synapses (Aljundi et al. 2018) as in He et al.'s code base: |gradient| importance of the
squared L2 norm of the model's outputs, a quadratic penalty towards the previous stage's parameters.

The estimation, normalisation and penalty are :mod:`cvit_bench.baselines.importance` (``mas`` kind); MAS
accumulates the tasks' normalised importance by summing (Ω ← Ω + Ω_t, as EWC sums its Fisher). Options:
``reg_lambda`` (λ, default 1e4 — chosen on cvit-mini so the penalty is of the order of the task loss; He et
al.'s ``ewc_lbd`` defaults to 1e8 on unnormalised importance, which does not transfer), ``importance_samples``
(256) and the LoRA options, including ``trainable`` (the family preset).
"""
from __future__ import annotations

from . import METHODS
from .importance import ImportanceMethod, ImportanceOptions


@METHODS.add
class MAS(ImportanceMethod):
    name = "mas"
    config_cls = ImportanceOptions
    kind = "mas"
