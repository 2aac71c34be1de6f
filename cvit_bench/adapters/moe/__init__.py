"""The ``cvit-moe`` adapter format of the mixture-of-LoRA methods.

:mod:`.config` (what a stage folder records), :mod:`.layers` (layer building blocks, routing state),
:mod:`.injection` (architectures and injecting them into a model), :mod:`.io` (reading/writing stage folders,
the evaluation backend's adapter format), :mod:`.architectures` (one module per method's layers).
Training (:mod:`cvit_bench.baselines`), import (:mod:`cvit_bench.importers`) and evaluation
(:mod:`cvit_bench.backends`) all read the format from here.
"""
