"""PEFT LoRA/DoRA adapters, shared by every method that trains one PEFT adapter (SeqLoRA, DoRA, Replay, EWC,
LwF, Multitask, DirLoRA).

Defaults are the papers' (docs/methods.md, Common training protocol of the papers): r 128, α 256 (``lora_alpha`` unset means
α = 2r, so ``--lora-r 8`` gives α 16 as in the cvit-mini recipe), dropout 0.05, LoRA on every linear layer of
the language model only (:data:`~cvit_bench.baselines.base.LLM_TARGET_MODULES`; the vision tower and the
projector stay frozen, as in SMoLoRA's protocol). ``train_projector=true`` follows CoIN's recipe instead: the
LLaVA projector (``multi_modal_projector``) is trained in full beside the LoRA (PEFT ``modules_to_save``, so
its weights travel in the stage's adapter file), with its own learning rate ``projector_lr`` (CoIN: 2e-5;
unset = the run's lr).

One PEFT model is built per run and kept for all stages (the base is never reloaded): a sequential stage keeps
training the same adapter in memory; :meth:`LoraMethod.init_adapter` overwrites the adapter weights in place
with a stage folder's (resume, few-shot stages) or with the run's initial random state (DirLoRA's fresh
adapter per task). Stage folders are plain PEFT adapter folders (``adapter_config.json`` +
``adapter_model.safetensors``), loadable by anyone with ``PeftModel.from_pretrained``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CvitError, DataError
from ..formats.run_file import ADAPTER_CONFIG, DEFAULT_WEIGHTS
from .base import LLM_TARGET_MODULES, Method, MethodConfig

WEIGHTS_NAME = DEFAULT_WEIGHTS
PROJECTOR_MODULE = "multi_modal_projector"
CONFIG_NAME = ADAPTER_CONFIG


@dataclass(frozen=True)
class LoraOptions(MethodConfig):
    lora_r: int = 128
    lora_alpha: float | None = None          # None: 2 * lora_r
    lora_dropout: float = 0.05
    target_modules: str = LLM_TARGET_MODULES
    use_dora: bool = False
    # trainable-part preset of the model family (cvit_bench.backends.families): None = the family's default
    # (LLaVA/Qwen2-VL: LLM LoRA; InstructBLIP: Q-Former + language projection)
    trainable: str | None = None
    train_projector: bool = False            # CoIN's recipe: the projector trained in full too
    projector_lr: float | None = None        # CoIN: 2e-5; None = the run's lr

    def __post_init__(self) -> None:
        if self.projector_lr is not None and self.projector_lr <= 0:
            raise ValueError(f"projector_lr must be positive, got {self.projector_lr}")
        if self.lora_r <= 0:
            raise ValueError(f"lora_r must be positive, got {self.lora_r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")

    @property
    def alpha(self) -> float:
        return float(self.lora_alpha) if self.lora_alpha is not None else 2.0 * self.lora_r

    def peft_config(self, model: Any = None) -> Any:
        """The PEFT config; with ``model``, the family's trainable-part preset (``trainable``) decides the targets."""
        from peft import LoraConfig

        alpha = self.alpha
        alpha = int(alpha) if float(alpha).is_integer() else alpha
        projector = [PROJECTOR_MODULE] if self.train_projector else []
        if model is None:
            return LoraConfig(r=self.lora_r, lora_alpha=alpha, lora_dropout=self.lora_dropout,
                              target_modules=self.target_modules, use_dora=self.use_dora, bias="none",
                              modules_to_save=projector or None)
        from ..backends.families import peft_kwargs

        kwargs = peft_kwargs(model, self.trainable, r=self.lora_r, alpha=alpha, dropout=self.lora_dropout,
                             target_modules=self.target_modules)
        if projector:   # CoIN's recipe: the projector trained in full beside the family's own saved parts
            kwargs["modules_to_save"] = list(dict.fromkeys([*(kwargs.get("modules_to_save") or []), *projector]))
        return LoraConfig(**kwargs, use_dora=self.use_dora, bias="none")


class LoraMethod(Method):
    """One PEFT adapter trained stage after stage (SeqLoRA behaviour); subclasses add hooks."""

    config_cls = LoraOptions

    def wrap(self, base_model: Any) -> Any:
        from peft import get_peft_model, get_peft_model_state_dict

        torch.manual_seed(self.seed)
        try:
            model = get_peft_model(base_model, self.config.peft_config(base_model))
        except (ValueError, CvitError) as exc:  # e.g. target_modules matching nothing
            raise CvitError(f"method {self.name!r}: cannot attach the adapter: {exc}") from None
        self._initial = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
        return model

    def init_adapter(self, model: Any, source: Path | None) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        if source is None:
            state = self._initial
        else:
            path = Path(source) / WEIGHTS_NAME
            if not path.is_file():
                raise DataError("stage folder has no adapter weights", file=path)
            state = load_file(str(path))
        result = set_peft_model_state_dict(model, state)
        missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
        if missing or getattr(result, "unexpected_keys", None):
            raise CvitError(f"{source}: adapter weights do not fit this run's adapter (missing {missing[:3]},"
                            f" unexpected {list(result.unexpected_keys)[:3]}); was it trained with other options?")

    def save(self, model: Any, folder: Path) -> Path:
        model.save_pretrained(str(folder))
        readme = Path(folder) / "README.md"  # peft's model-card stub: not part of the format
        if readme.exists():
            readme.unlink()
        return Path(folder) / WEIGHTS_NAME

    def load_for_eval(self, base_model: Any, stage_dir: str | Path, *, adapter_name: str = "default") -> Any:
        """Attach the stage's adapter to ``base_model`` (a PeftModel gets it hot-swapped in, the base is kept)."""
        from peft import PeftModel

        stage_dir = Path(stage_dir)
        if not (stage_dir / CONFIG_NAME).is_file():
            raise DataError(f"not a PEFT adapter folder (no {CONFIG_NAME})", file=stage_dir)
        if isinstance(base_model, PeftModel):
            if adapter_name in base_model.peft_config:
                # Same name again (the next stage of the same run, same adapter config): overwrite in place.
                from peft import set_peft_model_state_dict
                from safetensors.torch import load_file

                set_peft_model_state_dict(base_model, load_file(str(stage_dir / WEIGHTS_NAME)),
                                          adapter_name=adapter_name)
            else:
                base_model.load_adapter(str(stage_dir), adapter_name=adapter_name)
            base_model.set_adapter(adapter_name)
            return base_model.eval()
        return PeftModel.from_pretrained(base_model, str(stage_dir), adapter_name=adapter_name).eval()
