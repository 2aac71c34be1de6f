"""The method interface of the sequential trainer: typed configs, stage plans and the hooks a method owns.

A *method* decides four things, and nothing else:

* **which stages** a run has (:meth:`Method.plan`): one per upstream task for sequential methods, one joint
  stage for ``multitask``, none for ``zero-shot``;
* **what is trained** (:meth:`Method.wrap`, :meth:`Method.init_adapter`, :meth:`Method.save`,
  :meth:`Method.load_for_eval`): the adapter module and its on-disk format. PEFT LoRA/DoRA methods share
  :class:`~cvit_bench.baselines.lora.LoraMethod`; a method with its own adapter (MoE-LoRA variants) overrides
  these four and writes whatever files it needs into the stage folder, returning the weights file whose
  sha256 goes into ``run.json``;
* **on which samples** each stage trains (:meth:`Method.stage_examples`: replay mixes a buffer in);
* **extra terms and bookkeeping** (:meth:`before_stage`, :meth:`extra_loss`, :meth:`after_stage`,
  :meth:`save_state` / :meth:`restore_state` for state that must survive a resume, e.g. EWC's Fisher).

The trainer owns everything else (data encoding, optimisation, schedule, devices, atomic stage folders,
``run.json``). Methods register in :data:`cvit_bench.baselines.METHODS` by name.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import CvitError
from ..schedule import fewshot_folder, stage_folder

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .data import Example

#: LoRA on the language model only (CLIP's attention also has q/k/v/o_proj): docs/methods.md, Target modules.
LLM_TARGET_MODULES = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _convert(value: Any, hint: Any) -> Any:
    """Convert a CLI string (or a JSON value) to the annotated type: int, float, bool, str, or ``X | None``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        last: Exception | None = None
        for a in args:
            try:
                return _convert(value, a)
            except (TypeError, ValueError) as exc:
                last = exc
        raise ValueError(str(last))
    if hint is bool:
        return _parse_bool(value) if isinstance(value, str) else bool(value)
    if hint is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"not an integer: {value!r}")
        return int(value)
    if hint is float:
        return float(value)
    if hint is str:
        return str(value)
    return value


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's typed configuration (a frozen dataclass; ``run.json`` stores :meth:`to_dict`)."""

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None, *, method: str = "") -> MethodConfig:
        """Build the config from ``{name: value}`` (CLI ``--option k=v`` strings or typed values).

        Unknown names and unconvertible values raise :class:`CvitError` listing the valid options.
        ``-`` in names is accepted for ``_`` (``--option buffer-size=100``).
        """
        hints = typing.get_type_hints(cls)
        valid = cls.option_names()
        kwargs: dict[str, Any] = {}
        who = f"method {method!r}" if method else cls.__name__
        for raw_name, value in (options or {}).items():
            name = raw_name.replace("-", "_")
            if name not in valid:
                listing = ", ".join(valid) if valid else "(none: this method takes no options)"
                raise CvitError(f"unknown option {raw_name!r} for {who}; valid options: {listing}")
            try:
                kwargs[name] = _convert(value, hints[name])
            except (TypeError, ValueError) as exc:
                raise CvitError(f"option {raw_name!r} of {who}: {exc} (expected {hints[name]})") from None
        try:
            config = cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise CvitError(f"{who}: {exc}") from None
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class StagePlan:
    """One training stage: ``label`` names the folder (``stage-<NN>-<label>``), ``tasks`` are trained on."""

    index: int                      # 1-based
    label: str                      # the task id, or "multitask"
    tasks: tuple[str, ...]
    kind: str = "upstream"          # upstream | fewshot
    split: str = "train"            # prepared split trained on (``fewshot-5`` for few-shot stages)
    name: str = ""                  # few-shot stages: "fewshot-5"

    @property
    def folder(self) -> str:
        if self.kind == "fewshot":
            return fewshot_folder(self.name, self.label)
        return stage_folder(self.index, self.label)


@dataclass
class StageContext:
    """What hooks see during one stage. ``model`` is the unwrapped model (the trainer's DDP wrapper shares
    its parameters); ``compute_loss(batch) -> (loss, logits)`` is the trainer's answer-only loss."""

    stage: StagePlan
    plan: list[StagePlan]
    model: Any
    device: Any
    examples: list[Example]
    compute_loss: Callable[[dict[str, Any]], tuple[torch.Tensor, torch.Tensor]]
    make_batches: Callable[[list[Example], int], list[dict[str, Any]]]
    seed: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodEnv:
    """What the trainer tells a method about the run before :meth:`Method.wrap` (:meth:`Method.bind`):
    the benchmark spec (task families), the prepared data's template set and the base's processor.
    SMoLoRA needs them to embed the instruction types; other methods ignore them."""

    spec: Any = None
    template_set: str | None = None
    processor: Any = None
    #: He et al.'s already-learned tasks (replayed; the similarity of each new task to them is measured)
    initial_tasks: tuple[str, ...] = ()
    #: ``data(task, split) -> examples``, the trainer's cached encoder (for initial tasks' samples)
    data: Any = None
    #: ``samples(task, split) -> prepared samples`` (their prompt and target texts: task similarity)
    samples: Any = None
    templates: Any = None          # the TemplateSet itself (published sets carry the manifest's templates)


class Method:
    """Base class with the no-op defaults; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    #: run.json ``kind``: sequential | multitask | independent | zero-shot
    run_kind: ClassVar[str] = "sequential"
    #: run.json ``eval_adapter``: ``latest`` (row t uses stage t's adapter for every task) or ``own-task``
    eval_adapter: ClassVar[str] = "latest"
    #: reference rows (Multitask, DirLoRA, Zero-shot) are shown but never ranked
    reference: ClassVar[bool] = False
    #: whether training happens at all (zero-shot: no)
    trains: ClassVar[bool] = True
    #: every upstream stage starts from a fresh adapter instead of the previous one (DirLoRA)
    fresh_each_stage: ClassVar[bool] = False
    #: few-shot stages start from a fresh adapter instead of the final upstream one (DirLoRA)
    fresh_fewshot: ClassVar[bool] = False

    def __init__(self, config: MethodConfig, *, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.env = MethodEnv()

    # --- stages ---------------------------------------------------------------------------------------
    def plan(self, tasks: list[str]) -> list[StagePlan]:
        return [StagePlan(index=i, label=t, tasks=(t,)) for i, t in enumerate(tasks, 1)]

    def stage_examples(self, stage: StagePlan, plan: list[StagePlan],
                       data: Callable[[str, str], list[Example]]) -> tuple[list[Example], dict[str, Any]]:
        """Training examples of ``stage`` and stats for run.json; ``data(task, split)`` gives encoded examples."""
        examples = [e for t in stage.tasks for e in data(t, stage.split)]
        return examples, {"samples": len(examples)}

    # --- adapter --------------------------------------------------------------------------------------
    def bind(self, env: MethodEnv) -> None:
        """Called by the trainer once, before :meth:`wrap`, with facts about the run (kept as ``self.env``)."""
        self.env = env

    def wrap(self, base_model: Any) -> Any:
        raise NotImplementedError

    def init_adapter(self, model: Any, source: Path | None) -> None:
        """Reset the adapter: ``None`` → fresh initialisation, a stage folder → its weights."""
        raise NotImplementedError

    def save(self, model: Any, folder: Path) -> Path:
        """Write the adapter into ``folder``; return the weights file whose sha256 goes into run.json."""
        raise NotImplementedError

    def load_for_eval(self, base_model: Any, stage_dir: str | Path, *, adapter_name: str = "default") -> Any:
        raise NotImplementedError

    # --- hooks ----------------------------------------------------------------------------------------
    def before_stage(self, ctx: StageContext) -> None:
        return None

    def extra_loss(self, ctx: StageContext, batch: dict[str, Any], logits: torch.Tensor) -> torch.Tensor | None:
        return None

    def after_stage(self, ctx: StageContext) -> None:
        return None

    def save_state(self, folder: Path) -> None:
        """Cross-stage state (beyond the adapter) a resumed run needs; written inside the stage folder."""
        return None

    def restore_state(self, done: list[tuple[StagePlan, Path]],
                      data: Callable[[str, str], list[Example]]) -> None:
        """Rebuild cross-stage state from the completed stages when a run resumes."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.to_dict(),
                "kind": "reference" if self.reference else "method"}
