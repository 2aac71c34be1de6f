"""A text-only backend for judges: any local causal LM that transformers loads (a folder or a cached hub id).

The same conventions as the ``hf`` backend (:mod:`cvit_bench.backends.hf`): ``dtype``/``device`` resolved the
same way, left padding so that every row's continuation starts at the same position, batches sorted by
prompt length by the caller, only new tokens decoded with special tokens skipped. Chats are rendered with the
tokenizer's chat template (``add_generation_prompt=True``), as CoIN does for its Qwen judge. Replies are
returned *unstripped*: CoIN's score reader sees the raw text.

``model_hash`` identifies the judge for the judgment cache: sha256 over the sorted (name, sha256) of the
folder's weight, config and tokenizer files, memoised per (path, size, mtime) in ``<folder>/.cvit-model-hash.json``
when the folder is writable, so a 60 GB judge is hashed once.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..errors import CvitError
from ..files import sha256_file
from .hf import DTYPES, resolve_device, resolve_dtype

_HASHED_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja")
_MEMO = ".cvit-model-hash.json"


def model_folder(model: str) -> Path:
    path = Path(model)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any hub failure means: not available offline
        raise CvitError(f"judge model {model!r} is neither a folder nor a hub id in the local cache ({type(exc).__name__});"
                        " download it first (nothing is downloaded at run time)") from None


def model_hash(folder: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _HASHED_SUFFIXES and p.name != _MEMO)
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    memo = folder / _MEMO
    try:
        cached = json.loads(memo.read_text())
        if cached.get("stamp") == stamp:
            return cached["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.name}:{sha256_file(p)}\n".encode())
    value = digest.hexdigest()
    try:
        memo.write_text(json.dumps({"stamp": stamp, "sha256": value}))
    except OSError:
        pass   # read-only model folder: hash again next time
    return value


class CausalLMBackend:
    def __init__(self, model: Any, tokenizer: Any, device: str, dtype: str, folder: Path) -> None:
        self.model, self.tokenizer, self.device, self.dtype, self.folder = model, tokenizer, device, dtype, folder

    @classmethod
    def load(cls, model: str, *, dtype: str | None = None, device: str = "auto") -> CausalLMBackend:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = model_folder(model)
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not getattr(tokenizer, "chat_template", None):
            raise CvitError(f"judge model {folder} has no chat template; the judge prompt is a chat (system + user)")
        lm = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype]).to(device).eval()
        return cls(lm, tokenizer, device, dtype, folder)

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts: list[str], *, max_new_tokens: int, sampling: dict[str, Any] | None = None,
                 seed: int = 0) -> list[str]:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "num_beams": 1,
                                  "pad_token_id": self.tokenizer.pad_token_id}
        if sampling:
            torch.manual_seed(seed)
            kwargs.update(sampling)
        else:
            kwargs["do_sample"] = False
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)

    def describe(self) -> dict[str, Any]:
        return {"backend": "causal-lm", "model": str(self.folder), "dtype": self.dtype, "device": self.device}
