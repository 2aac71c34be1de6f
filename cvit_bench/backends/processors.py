"""Loading the processor that belongs to a model folder, per ``config.model_type``.

``AutoProcessor`` is right for most models (LLaVA's llava-hf layout included). Qwen2-VL is the exception on
machines without torchvision: ``Qwen2VLProcessor`` insists on building a video processor, which needs
torchvision, and ``AutoProcessor`` on such a folder silently returns the bare tokenizer. The benchmark never
feeds videos, so :class:`Qwen2VLImageOnlyProcessor` keeps the image path of ``Qwen2VLProcessor`` (its
``__call__`` expands ``<|image_pad|>`` per image from ``image_grid_thw``) and skips the video processor.

Adding a model family with a special processor is one function plus one line in :data:`PROCESSOR_LOADERS`.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import AutoProcessor, ProcessorMixin, Qwen2VLProcessor

from ..errors import CvitError


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without its video processor (works without torchvision)."""

    # ProcessorMixin reads the attribute list to save/load sub-processors; the video one is left out.
    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = tokenizer.image_token
        self.video_token = tokenizer.video_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def _auto(path: Path) -> Any:
    return AutoProcessor.from_pretrained(path)


def _qwen2vl(path: Path) -> Any:
    return Qwen2VLImageOnlyProcessor.from_pretrained(path)


#: model_type → loader; anything else goes through AutoProcessor.
PROCESSOR_LOADERS: dict[str, Callable[[Path], Any]] = {
    "qwen2_vl": _qwen2vl,
    "qwen2_5_vl": _qwen2vl,   # same processor layout (Qwen2_5_VLProcessor also insists on a video processor)
}


def load_processor(path: str | Path, model_type: str) -> Any:
    """Load the processor of a local model folder (or hub id) and check it can handle images and text."""
    loader = PROCESSOR_LOADERS.get(model_type, _auto)
    proc = loader(Path(path) if Path(path).exists() else path)
    if getattr(proc, "image_processor", None) is None or getattr(proc, "tokenizer", None) is None:
        raise CvitError(
            f"{path}: the processor loaded for model_type {model_type!r} is {type(proc).__name__}, which has no"
            " image processor and tokenizer; this backend needs a multimodal processor"
        )
    return proc
