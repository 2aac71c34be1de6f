"""The ``hf`` backend: transformers ``AutoModelForImageTextToText`` + processor, PEFT adapters hot-swapped.

Loading: the model folder's ``config.model_type`` picks the processor loader
(:mod:`cvit_bench.backends.processors`; Qwen2-VL gets the image-only processor), the model is loaded once
with ``dtype`` (default bfloat16 on CUDA, float32 on CPU) and put in eval mode. The tokenizer pads on the
left, so that every row's last prompt token sits at the same position and greedy continuations do not
depend on the batch (verified bit-for-bit on CPU in float32; on GPU in bf16, kernels chosen per batch shape
can still flip a near-tie, which is why batch size and dtype are recorded in results).

Adapters: the folder's format (:mod:`cvit_bench.backends.adapters`: ``peft`` built in, others registered by
the code that defines them, e.g. the mixture-of-LoRA format through the ``cvit_bench.adapter_formats`` entry
point) attaches, switches and removes them on the loaded base; the base is never reloaded. ``activate(None)``
runs the bare base. Each request's instruction type (``GenerationRequest.ins_type``) goes to the format's
``generation_context`` for the batch (SMoLoRA routes on it). Adapters of two formats cannot be loaded side
by side.

Projector: a stage folder may also hold ``projector.safetensors`` (LLaVA-style trainers retrain the projector
at every stage; :mod:`cvit_bench.backends.projector`). Its tensors are checked against the base's projector
when the adapter is added and copied into the projector whenever that stage is activated; a stage without
one, and ``activate(None)``, get the base's original projector back, bit for bit.

Generation: greedy (``do_sample=False, num_beams=1``), ``max_new_tokens`` = the batch maximum, each output
then cut to its own request's limit and at the first EOS, so that a request's output does not depend on
its neighbours' budgets (greedy decoding of a row does not look at other rows). Only new tokens are
decoded, special tokens skipped, whitespace and a trailing ``</s>`` stripped (docs/benchmarks/cvit.md).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from ..data.conversation import PromptFormat, get_prompt_format
from ..errors import CvitError, UnknownNameError
from .adapters import AdapterSet, format_of
from . import families  # noqa: F401  (registers the family prompt formats, e.g. "plain")
from .base import BACKENDS, GenerationRequest
from .processors import load_processor
from .projector import ProjectorSwap, has_projector

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_BATCH_SIZE = 8


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


@dataclass
class HFBackend:
    name: ClassVar[str] = "hf"
    model: Any
    processor: Any
    prompt_format: PromptFormat
    model_path: str
    model_type: str
    dtype: str
    device: str
    adapters: dict[str, str] = field(default_factory=dict)  # name → folder
    active: str | None = None
    # The adapters now attached, all of one format (cvit_bench.backends.adapters), and that format's name.
    _set: AdapterSet | None = field(default=None, init=False, repr=False)
    _format: str | None = field(default=None, init=False, repr=False)
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
    def add_adapter(self, name: str, path: str | Path) -> None:
        """Attach the adapter in folder ``path`` under ``name`` (unmerged, inactive until ``activate``), with
        the folder's ``projector.safetensors`` when it has one (swapped in whenever ``name`` is active)."""
        path = Path(path)
        if name in self.adapters:
            raise CvitError(f"adapter name {name!r} is already loaded (from {self.adapters[name]})")
        projector = None
        if has_projector(path):
            if self._projector is None:
                raise CvitError(f"{path}: the stage carries projector weights but the base model "
                                f"{self.model_path} has no projector module")
            projector = self._projector.read(path)   # validated before the adapter is loaded
        fmt = format_of(path)
        if self._set is not None and fmt.name != self._format:
            raise CvitError(f"{path}: a {fmt.name} adapter cannot be loaded next to the {self._format} adapters "
                            f"{sorted(self.adapters)}; remove those first")
        if self._set is None:
            self._set, self._format = fmt.open(self.model, self.model_path), fmt.name
        try:
            self._set.add(name, path)
            self.adapters[name] = str(path)
            self._stage_projectors[name] = projector
        finally:
            self._sync()
        self.model.eval()

    def _sync(self) -> None:
        """Take the (possibly re-wrapped) model back from the adapter set; drop the set when it is empty."""
        if self._set is None:
            return
        self.model = self._set.model
        if not self._set.names():
            self._set, self._format = None, None

    def activate(self, name: str | None) -> None:
        """Make adapter ``name`` active; ``None`` = the bare base (adapters stay loaded)."""
        if name is not None and name not in self.adapters:
            raise UnknownNameError("adapter", name, list(self.adapters))
        self.active = name
        if self._projector is not None:
            self._projector.apply(self._stage_projectors.get(name) if name is not None else None)
        if self._set is not None:
            self._set.activate(name)
            self._sync()

    def remove_adapter(self, name: str) -> None:
        """Unload adapter ``name``; removing the last one gives the bare base back (never merged)."""
        if name not in self.adapters:
            raise UnknownNameError("adapter", name, list(self.adapters))
        if self._stage_projectors.pop(name, None) is not None and self.active == name:
            self._projector.apply(None)     # the base's own projector back before the stage goes
        del self.adapters[name]
        if self.active == name:
            self.active = None
        self._set.remove(name)
        self._sync()

    def generation_scope(self, requests: list[GenerationRequest]):
        """The context a forward pass over ``requests`` runs in: the active adapter's (disabled PEFT adapters
        for the bare base, per-request routing inputs for cvit-moe). Public for code that runs its own forward
        passes on the loaded model (tests comparing logits, probes)."""
        return self._adapter_context(requests)

    def _adapter_context(self, requests: list[GenerationRequest]):
        if self._set is None:
            return contextlib.nullcontext()
        return self._set.generation_context(requests)

    # ------------------------------------------------------------------ generation
    def encode(self, requests: list[GenerationRequest], images: list[Image.Image | None]) -> dict[str, Any]:
        """The model inputs of one batch, as :meth:`generate` feeds them (prompt format, image tokens, left
        padding, device and dtype); for callers that run their own forward pass in :meth:`generation_scope`."""
        if len(requests) != len(images):
            raise ValueError(f"{len(requests)} requests but {len(images)} images")
        for r, im in zip(requests, images):
            if im is not None and not isinstance(im, Image.Image):
                raise TypeError(f"request {r.uid}: image must be a PIL image or None, got {type(im).__name__}")
        prompts = [self.prompt_format.render_eval(r.prompt, im is not None) for r, im in zip(requests, images)]
        pil = [im for im in images if im is not None]
        inputs = families.pack_padding(self.processor(images=pil or None, text=prompts, return_tensors="pt",
                                                      padding=True))
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
        inputs = self.encode(requests, images)
        tok = self.processor.tokenizer
        eos = self._eos_ids()
        gen_cfg = GenerationConfig(
            do_sample=False, num_beams=1, max_new_tokens=max(r.max_new_tokens for r in requests),
            eos_token_id=eos or None, pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos[0],
            bos_token_id=tok.bos_token_id,
        )
        with torch.inference_mode(), self._adapter_context(requests):
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
        lengths = [len(self.encode([r], [im])["input_ids"][0]) for r, im in zip(requests, images)]
        i = max(range(len(requests)), key=lambda k: lengths[k] + requests[k].max_new_tokens)
        fits, n = 0, 1
        while n <= max_batch_size:
            try:
                self.probe_peak(requests[i], images[i], n)
            except torch.OutOfMemoryError:
                break
            finally:
                torch.cuda.empty_cache()
            fits, n = n, n * 2
        if fits == 0:
            raise CvitError(f"{self.model_path}: one sample of {lengths[i]} prompt tokens plus"
                            f" {requests[i].max_new_tokens} new tokens does not fit in GPU memory")
        return fits

    def probe_peak(self, req: GenerationRequest, image: Image.Image | None, n: int) -> tuple[int, int]:
        """The forward pass :meth:`auto_batch_size` sizes batches with: ``req`` repeated ``n`` times over its
        prompt plus ``max_new_tokens`` positions, KV cache on, logits of the last position only. Returns the
        (batch, positions) it ran; raises ``torch.OutOfMemoryError`` when it does not fit."""
        inputs = self.encode([req] * n, [image] * n)
        extra = torch.full((n, req.max_new_tokens), self.processor.tokenizer.pad_token_id or 0,
                           dtype=inputs["input_ids"].dtype, device=self.device)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
        for key in ("token_type_ids", "mm_token_type_ids"):  # per-token extras some processors return
            if key in inputs:
                inputs[key] = torch.cat([inputs[key], torch.zeros_like(extra)], dim=1)
        with torch.inference_mode(), self._adapter_context([req] * n):
            self.model(**inputs, use_cache=True, logits_to_keep=1)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return n, int(inputs["input_ids"].shape[1])

    # ------------------------------------------------------------------ provenance
    def describe(self) -> dict[str, Any]:
        import peft
        import transformers

        base = self._set.base_model() if self._set is not None else self.model
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
            "adapter_format": self._format,
            "stage_projectors": sorted(n for n, p in self._stage_projectors.items() if p is not None),
            "transformers_version": transformers.__version__,
            "peft_version": peft.__version__,
        }


BACKENDS.add(HFBackend)
