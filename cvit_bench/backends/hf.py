"""The ``hf`` backend: transformers ``AutoModelForImageTextToText`` + processor, PEFT adapters hot-swapped.

Loading: the model folder's ``config.model_type`` picks the processor loader
(:mod:`cvit_bench.backends.processors`; Qwen2-VL gets the image-only processor), the model is loaded once
with ``dtype`` (default bfloat16 on CUDA, float32 on CPU) and put in eval mode. The tokenizer pads on the
left, so that every row's last prompt token sits at the same position and greedy continuations do not
depend on the batch (verified bit-for-bit on CPU in float32; on GPU in bf16, kernels chosen per batch shape
can still flip a near-tie, which is why batch size and dtype are recorded in results).

Adapters (any PEFT type) are loaded unmerged: the first wraps the base in a ``PeftModel``
(``PeftModel.from_pretrained``), later ones are added with ``load_adapter``; ``activate`` switches with
``set_adapter`` and ``activate(None)`` runs the base through ``disable_adapter()``; the base is never
reloaded. After loading, every tensor in the adapter file must have landed on a module of the base and
every adapter tensor of the base must have come from the file; otherwise the adapter was made for another
base and a :class:`~cvit_bench.errors.CvitError` names the adapter folder and the base.

Stage folders in a method's own format (``adapter_config.json`` with a ``cvit_adapter`` key: the
mixture-of-LoRA methods of :mod:`cvit_bench.baselines.moe_layers`) are attached through the method registry
(:func:`cvit_bench.baselines.load_for_eval`) onto the same loaded base: one is attached at a time, ``activate``
swaps the stage's weights in (re-attaching only when the stage changes) and ``activate(None)`` switches the
injected layers off. Each request's instruction type (``GenerationRequest.ins_type``) is handed to the model
for the batch (SMoLoRA routes on it). PEFT and such adapters cannot be loaded side by side.

Projector: a stage folder may also hold ``projector.safetensors`` (LLaVA-style trainers retrain the projector
at every stage; :mod:`cvit_bench.backends.projector`). Its tensors are checked against the base's projector
when the adapter is added and copied into the projector whenever that stage is activated; a stage without
one, and ``activate(None)``, get the base's original projector back, bit for bit.

Generation: greedy (``do_sample=False, num_beams=1``), ``max_new_tokens`` = the batch maximum, each output
then cut to its own request's limit and at the first EOS, so that a request's output does not depend on
its neighbours' budgets (greedy decoding of a row does not look at other rows). Only new tokens are
decoded, special tokens skipped, whitespace and a trailing ``</s>`` stripped (spec §1.6).
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..conversation import PromptFormat, get_prompt_format
from ..errors import CvitError, UnknownNameError
from .base import BACKENDS, GenerationRequest
from .processors import load_processor
from .projector import ProjectorSwap, has_projector

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_BATCH_SIZE = 8
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; anything else is passed to torch as is."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str | None, device: str) -> str:
    """Default: bfloat16 on CUDA, float32 elsewhere (CPU bf16 matmuls are slow and less reproducible)."""
    if dtype is None:
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise UnknownNameError("dtype", dtype, list(DTYPES))
    return dtype


def clean_output(text: str) -> str:
    """Strip whitespace, then a trailing ``</s>`` and whitespace again (the reference scripts' rule)."""
    text = text.strip()
    if text.endswith("</s>"):
        text = text[: -len("</s>")].strip()
    return text


def _strip_tuner_layers(model: torch.nn.Module) -> None:
    """Undo a half-finished first ``PeftModel.from_pretrained`` on ``model`` (in place).

    peft injects its layers into the base before loading weights; when loading then fails, the base keeps
    the injected (randomly initialised) layers. Each is replaced by the layer it wraps.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and name:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


@dataclass
class HFBackend:
    model: Any
    processor: Any
    prompt_format: PromptFormat
    model_path: str
    model_type: str
    dtype: str
    device: str
    adapters: dict[str, str] = field(default_factory=dict)  # name → folder
    active: str | None = None
    # peft mangles state-dict keys with the adapter name (a name inside "lora_", such as "r", breaks
    # loading), so adapters live in peft under generated names "cvit<N>".
    _peft_names: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _counter: int = field(default=0, init=False, repr=False)
    # Method-format adapters (name → folder) and the one whose weights are attached now.
    _custom: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _attached: str | None = field(default=None, init=False, repr=False)
    # Stage-specific projector weights (backends/projector.py): name → tensors, None = the base's own.
    _projector: ProjectorSwap | None = field(default=None, init=False, repr=False)
    _stage_projectors: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    # ------------------------------------------------------------------ loading
    @staticmethod
    def generation_dtype(dtype: str | None, device: str = "auto") -> str:
        return resolve_dtype(dtype, resolve_device(device))

    @classmethod
    def load(
        cls,
        model: str,
        *,
        dtype: str | None = None,
        device: str = "auto",
        prompt_format: str = "vicuna_v1",
    ) -> HFBackend:
        """Load model and processor from a local folder (or a hub id when online)."""
        from transformers import AutoConfig, AutoModelForImageTextToText

        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        try:
            config = AutoConfig.from_pretrained(model)
        except (OSError, ValueError) as e:
            raise CvitError(f"{model}: cannot load the model config ({e})") from None
        processor = load_processor(model, config.model_type)
        processor.tokenizer.padding_side = "left"
        try:
            net = AutoModelForImageTextToText.from_pretrained(model, dtype=DTYPES[dt])
        except (OSError, ValueError) as e:
            raise CvitError(f"{model}: cannot load the model as image-text-to-text ({e})") from None
        net.to(dev).eval()
        fmt = get_prompt_format(prompt_format, processor)
        backend = cls(model=net, processor=processor, prompt_format=fmt, model_path=str(model),
                      model_type=config.model_type, dtype=dt, device=dev)
        backend._projector = ProjectorSwap.for_model(net)
        return backend

    # ------------------------------------------------------------------ adapters
    def _is_peft(self) -> bool:
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    def _wrong_base(self, path: Path, detail: str) -> CvitError:
        return CvitError(
            f"{path}: adapter does not fit the base model {self.model_path} (made for another base?): {detail}"
        )

    def add_adapter(self, name: str, path: str | Path) -> None:
        """Load the adapter in folder ``path`` under ``name`` (unmerged, inactive until ``activate``), with
        the folder's ``projector.safetensors`` when it has one (swapped in whenever ``name`` is active)."""
        if name in self.adapters:
            raise CvitError(f"adapter name {name!r} is already loaded (from {self.adapters[name]})")
        projector = None
        if has_projector(path):
            if self._projector is None:
                raise CvitError(f"{path}: the stage carries projector weights but the base model "
                                f"{self.model_path} has no projector module")
            projector = self._projector.read(path)   # validated before the adapter is loaded
        self._stage_projectors[name] = projector
        try:
            self._add_adapter(name, Path(path))
        except BaseException:
            self._stage_projectors.pop(name, None)
            raise

    def _add_adapter(self, name: str, path: Path) -> None:
        from peft import PeftConfig, PeftModel

        from ..baselines.moe_layers import is_custom_adapter

        if is_custom_adapter(path):
            self._add_custom(name, path)
            return
        if self._custom:
            raise CvitError(f"{path}: a PEFT adapter cannot be loaded next to the method-format adapters "
                            f"{sorted(self._custom)}; remove those first")
        if not (path / "adapter_config.json").is_file():
            raise CvitError(f"{path}: not a PEFT adapter folder (no adapter_config.json)")
        if not any((path / w).is_file() for w in _ADAPTER_WEIGHTS):
            raise CvitError(f"{path}: not a PEFT adapter folder (no {' or '.join(_ADAPTER_WEIGHTS)})")
        try:
            config = PeftConfig.from_pretrained(str(path))
        except Exception as e:  # peft raises ValueError/TypeError/JSONDecodeError for bad configs
            raise CvitError(f"{path}: adapter_config.json is not a valid PEFT config ({e})") from None

        first = not self._is_peft()
        if not first:
            loaded = {str(c.peft_type.value) for c in self.model.peft_config.values()}
            if str(config.peft_type.value) not in loaded:
                raise CvitError(
                    f"{path}: a {config.peft_type.value} adapter cannot be loaded next to the"
                    f" {'/'.join(sorted(loaded))} adapters {sorted(self.adapters)} (peft cannot mix adapter"
                    " types on one model); remove those first"
                )
        peft_name = f"cvit{self._counter}"
        self._counter += 1
        try:
            with warnings.catch_warnings():
                # "Found missing adapter keys": checked below and turned into an error
                warnings.filterwarnings("ignore", message=".*missing adapter keys.*")
                if first:
                    self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=peft_name,
                                                           is_trainable=False)
                else:
                    self.model.load_adapter(str(path), adapter_name=peft_name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            self._discard_failed(peft_name, first)
            raise self._wrong_base(path, f"{type(e).__name__}: {str(e).strip()[:800]}") from None
        self.adapters[name] = str(path)
        self._peft_names[name] = peft_name
        problem = self._weights_mismatch(peft_name, path)
        if problem:
            self.remove_adapter(name)
            raise self._wrong_base(path, problem)
        self.model.eval()
        self._apply_active()

    def _add_custom(self, name: str, path: Path) -> None:
        if self._is_peft():
            raise CvitError(f"{path}: a method-format adapter cannot be loaded next to the PEFT adapters "
                            f"{sorted(self.adapters)}; remove those first")
        self._attach_custom(path)           # validates against the base now (wrong base → CvitError)
        self.adapters[name] = str(path)
        self._custom[name] = str(path)
        self._attached = name
        self.model.eval()
        self._apply_active()

    def _attach_custom(self, path: str | Path) -> None:
        from ..baselines import load_for_eval
        from ..baselines.moe_layers import read_adapter_config

        cfg = read_adapter_config(path)
        load_for_eval(self.model, path, method=cfg["method"], options=cfg["config"])

    def _discard_failed(self, peft_name: str, first: bool) -> None:
        if first:
            base = self.model.get_base_model() if self._is_peft() else self.model
            _strip_tuner_layers(base)
            self.model = base
        elif peft_name in self.model.peft_config:
            self.model.delete_adapter(peft_name)
            self._apply_active()

    def _weights_mismatch(self, peft_name: str, path: Path) -> str | None:
        """Compare the file's tensor names with the adapter tensors now on the model (None when equal)."""
        from peft.utils import get_peft_model_state_dict, load_peft_weights

        in_file = set(load_peft_weights(str(path), device="cpu"))
        on_model = set(get_peft_model_state_dict(self.model, adapter_name=peft_name))
        unexpected, missing = sorted(in_file - on_model), sorted(on_model - in_file)
        if not unexpected and not missing:
            return None
        parts = []
        if unexpected:
            parts.append(f"{len(unexpected)} tensors match no module of the base (e.g. {unexpected[0]})")
        if missing:
            parts.append(f"{len(missing)} adapter tensors missing from the file (e.g. {missing[0]})")
        return "; ".join(parts)

    def activate(self, name: str | None) -> None:
        """Make adapter ``name`` active; ``None`` = the bare base (adapters stay loaded)."""
        if name is not None and name not in self.adapters:
            raise UnknownNameError("adapter", name, list(self.adapters))
        self.active = name
        self._apply_active()

    def _apply_active(self) -> None:
        if self._projector is not None:
            self._projector.apply(self._stage_projectors.get(self.active) if self.active is not None else None)
        if self._custom:
            from ..baselines.moe_layers import set_active

            if self.active is not None and self._attached != self.active:
                self._attach_custom(self._custom[self.active])
                self._attached = self.active
            set_active(self.model, self.active is not None)
            return
        if self.active is not None:
            self.model.set_adapter(self._peft_names[self.active])

    def remove_adapter(self, name: str) -> None:
        """Unload adapter ``name``; removing the last one unwraps the base (``unload``, not merged)."""
        if name not in self.adapters:
            raise UnknownNameError("adapter", name, list(self.adapters))
        if self._stage_projectors.pop(name, None) is not None and self.active == name:
            self._projector.apply(None)     # the base's own projector back before the stage goes
        if name in self._custom:
            self._remove_custom(name)
            return
        del self.adapters[name]
        peft_name = self._peft_names.pop(name)
        if self.active == name:
            self.active = None
        if not self.adapters:
            # LoRA-like tuners replace modules: unload() puts the originals back (no merge). Prompt-learning
            # adapters (no unload) never touched the base's modules.
            unload = getattr(self.model.base_model, "unload", None)
            self.model = unload() if callable(unload) else self.model.get_base_model()
        else:
            # delete_adapter may activate another adapter (and warn); we re-apply our own choice, and with
            # self.active None generation disables them all
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*which is now deleted.*")
                self.model.delete_adapter(peft_name)
            self._apply_active()

    def _remove_custom(self, name: str) -> None:
        from ..baselines.moe_layers import detach_adapter

        del self.adapters[name]
        del self._custom[name]
        if self.active == name:
            self.active = None
        if self._attached == name:
            self._attached = None
        if not self._custom:
            detach_adapter(self.model)   # the base's own linears are back
            return
        self._apply_active()

    def _request_info(self, requests: list[GenerationRequest]):
        """Hand each request's instruction type to a method-format adapter for one call (SMoLoRA)."""
        if not self._custom:
            return contextlib.nullcontext()
        from ..baselines.moe_layers import set_request_info

        @contextlib.contextmanager
        def scope():
            set_request_info(self.model, ins_type=[getattr(r, "ins_type", None) for r in requests])
            try:
                yield
            finally:
                set_request_info(self.model, ins_type=None)

        return scope()

    def _adapter_context(self):
        if self.active is None and self._is_peft():
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ generation
    def _encode(self, requests: list[GenerationRequest], images: list[Image.Image | None]):
        if len(requests) != len(images):
            raise ValueError(f"{len(requests)} requests but {len(images)} images")
        for r, im in zip(requests, images):
            if im is not None and not isinstance(im, Image.Image):
                raise TypeError(f"request {r.uid}: image must be a PIL image or None, got {type(im).__name__}")
        prompts = [self.prompt_format.render_eval(r.prompt, im is not None) for r, im in zip(requests, images)]
        pil = [im for im in images if im is not None]
        inputs = self.processor(images=pil or None, text=prompts, return_tensors="pt", padding=True)
        model_dtype = DTYPES[self.dtype]
        return {k: (v.to(self.device, model_dtype) if torch.is_floating_point(v) else v.to(self.device))
                for k, v in inputs.items()}

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.processor.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])

    def generate(self, requests: list[GenerationRequest], images: list[Image.Image | None]) -> list[str]:
        """Greedy answers for one batch, in request order (see the module docstring for the rules)."""
        from transformers import GenerationConfig

        if not requests:
            return []
        inputs = self._encode(requests, images)
        tok = self.processor.tokenizer
        eos = self._eos_ids()
        gen_cfg = GenerationConfig(
            do_sample=False, num_beams=1, max_new_tokens=max(r.max_new_tokens for r in requests),
            eos_token_id=eos or None, pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos[0],
            bos_token_id=tok.bos_token_id,
        )
        with torch.inference_mode(), self._adapter_context(), self._request_info(requests):
            out = self.model.generate(**inputs, generation_config=gen_cfg)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        texts = []
        for req, ids in zip(requests, new):
            ids = ids[: req.max_new_tokens]
            for j, t in enumerate(ids):
                if t in eos:
                    ids = ids[:j]
                    break
            texts.append(clean_output(tok.decode(ids, skip_special_tokens=True)))
        return texts

    def auto_batch_size(
        self,
        requests: list[GenerationRequest],
        images: list[Image.Image | None],
        *,
        max_batch_size: int = 256,
    ) -> int:
        """Largest power of two ≤ ``max_batch_size`` whose worst case fits in GPU memory; 8 on CPU.

        Probe: the request with the longest prompt (image included) is repeated n times and run through
        one forward pass over prompt + ``max_new_tokens`` positions with the KV cache on and logits for
        the last position only, which bounds what greedy generation of that batch holds at its peak
        (cache + activations of the longest step). n doubles from 1 until CUDA runs out of memory.
        """
        if not self.device.startswith("cuda"):
            return CPU_BATCH_SIZE
        if not requests:
            raise ValueError("auto_batch_size needs at least one request to size the probe")
        lengths = [len(self._encode([r], [im])["input_ids"][0]) for r, im in zip(requests, images)]
        i = max(range(len(requests)), key=lambda k: lengths[k] + requests[k].max_new_tokens)
        fits, n = 0, 1
        while n <= max_batch_size:
            try:
                self._probe(requests[i], images[i], n)
            except torch.OutOfMemoryError:
                break
            finally:
                torch.cuda.empty_cache()
            fits, n = n, n * 2
        if fits == 0:
            raise CvitError(f"{self.model_path}: one sample of {lengths[i]} prompt tokens plus"
                            f" {requests[i].max_new_tokens} new tokens does not fit in GPU memory")
        return fits

    def _probe(self, req: GenerationRequest, image: Image.Image | None, n: int) -> None:
        inputs = self._encode([req] * n, [image] * n)
        extra = torch.full((n, req.max_new_tokens), self.processor.tokenizer.pad_token_id or 0,
                           dtype=inputs["input_ids"].dtype, device=self.device)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
        for key in ("token_type_ids", "mm_token_type_ids"):  # per-token extras some processors return
            if key in inputs:
                inputs[key] = torch.cat([inputs[key], torch.zeros_like(extra)], dim=1)
        with torch.inference_mode(), self._adapter_context(), self._request_info([req] * n):
            self.model(**inputs, use_cache=True, logits_to_keep=1)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    # ------------------------------------------------------------------ provenance
    def describe(self) -> dict[str, Any]:
        import peft
        import transformers

        base = self.model.get_base_model() if self._is_peft() else self.model
        return {
            "backend": "hf",
            "model": self.model_path,
            "model_type": self.model_type,
            "model_class": type(base).__name__,
            "dtype": self.dtype,
            "device": self.device,
            "prompt_format": self.prompt_format.describe(),
            "processor_class": type(self.processor).__name__,
            "padding_side": self.processor.tokenizer.padding_side,
            "adapters": dict(self.adapters),
            "active_adapter": self.active,
            "stage_projectors": sorted(n for n, p in self._stage_projectors.items() if p is not None),
            "transformers_version": transformers.__version__,
            "peft_version": peft.__version__,
        }


BACKENDS.add("hf", HFBackend)
