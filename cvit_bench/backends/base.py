"""What every model backend offers the runner: generation requests, the Backend protocol, the registry.

A backend holds one base model for the whole evaluation and swaps adapters on it (``add_adapter``,
``activate``, ``remove_adapter``); it never reloads the base between stages. ``generate`` takes one batch
whose images are already decoded (the runner's DataLoader decodes them in worker processes) and returns one
string per request, in order. Outputs must not depend on which other requests share the batch beyond what
the numerics of the device allow; the backend records what could change them (dtype, batch size) through
``describe``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from ..registry import Registry


@dataclass(frozen=True)
class GenerationRequest:
    """One sample to answer: the user text (without image token), the image path or None, the budget.

    ``image_mode`` is ``pad`` or ``crop`` (see :mod:`cvit_bench.data.images`); ``max_new_tokens`` is this
    request's own limit, honoured exactly even when the batch generates longer. ``ins_type`` is the
    sample's instruction type (the task's family, docs/benchmarks/cvit.md, Templates): adapters that route on it
    (SMoLoRA) receive it, every other backend and adapter ignores it.
    """

    uid: str
    prompt: str
    image: str | None
    max_new_tokens: int
    image_mode: str = "pad"
    ins_type: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"request {self.uid}: max_new_tokens must be at least 1, got {self.max_new_tokens}")


@runtime_checkable
class Backend(Protocol):
    def add_adapter(self, name: str, path: str) -> None: ...

    def activate(self, name: str | None) -> None: ...

    def remove_adapter(self, name: str) -> None: ...

    def generate(self, requests: list[GenerationRequest], images: list[Image.Image | None]) -> list[str]: ...

    def auto_batch_size(self, requests: list[GenerationRequest], images: list[Image.Image | None]) -> int: ...

    def describe(self) -> dict[str, Any]: ...


#: name → backend class; each class has ``load(model, *, dtype=None, device="auto", prompt_format=...)``.
#: Built in: ``hf`` and ``predictions`` (imported on first lookup: torch only loads when a backend is used);
#: others through entry points ``cvit_bench.backends``.
BACKENDS: Registry[type] = Registry("backend", entry_points="cvit_bench.backends", discover=lambda: _builtin())


def _builtin() -> None:
    from . import hf, predictions  # noqa: F401  (register "hf" and "predictions")


def backend_class(name: str) -> type:
    """The registered backend class. Besides ``load`` it has ``generation_dtype(dtype, device) -> str``: the
    dtype a load with these options would use, known without loading the model (it enters the prediction
    fingerprint, so a finished rerun can be recognised early)."""
    return BACKENDS.get(name)


def load_backend(name: str, model: str, **kwargs: Any) -> Backend:
    """Instantiate a registered backend."""
    return backend_class(name).load(model, **kwargs)
