"""Reading other code bases' weight files safely, and checking a converted state dict against its target.

``.bin`` files are pickles: unpickling runs whatever the file asks for, so they are only ever read with
``torch.load(weights_only=True)`` (tensors, plain containers and numbers; no objects). A file that needs
more is refused with a :class:`~cvit_bench.errors.DataError` naming it, never retried unsafely.
``.safetensors`` files are read with ``safetensors`` (no code at all).

:func:`check_state_dict` is the single gate every importer passes its converted tensors through: missing
and unexpected keys are listed (never silently random weights, never silently dropped tensors) and a shape
mismatch names the tensor and both shapes.
"""
from __future__ import annotations

import os
import pickle
import struct
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from ..errors import DataError, MissingFileError
from ..files import read_json

SHOW_KEYS = 8   # keys listed in an error message before "… and N more"


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of one ``.bin``/``.pt``/``.pth`` (pickle, weights only) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own SafetensorError for corrupt headers
            raise DataError(f"not a readable safetensors file ({exc})", file=path) from None
    try:
        data = _torch_load(path)
    except pickle.UnpicklingError as exc:
        raise DataError("refused: this pickle holds more than tensors (loading it would run code it names); "
                        f"only weights-only pickles are read ({_first_line(exc)})", file=path) from None
    except UNREADABLE as exc:
        raise DataError(f"not a readable PyTorch weights file, truncated or corrupt ({_first_line(exc)})",
                        file=path) from None
    if not isinstance(data, Mapping):
        raise DataError(f"expected a state dict (name → tensor), found {type(data).__name__}", file=path)
    bad = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise DataError(f"{len(bad)} entries are not tensors (e.g. {bad[0]!r})", file=path)
    return dict(data)


#: What ``torch.load`` raises on a truncated or corrupt file (an empty file, a cut legacy pickle: EOFError with no
#: message, struct.error from a cut header, BadZipFile from a cut zip).
UNREADABLE = (RuntimeError, EOFError, ValueError, OSError, IndexError, KeyError, struct.error, zipfile.BadZipFile)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none (``EOFError()``)."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _torch_load(path: Path):
    """Weights-only load, memory-mapped when the file is in torch's zip format (every file torch >= 1.6
    writes), so a 10 GB shard is paged in as it is used rather than read whole first."""
    mmap = zipfile.is_zipfile(path)
    return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)


#: A ``save_pretrained`` model folder's weights: a sharded index, else one file (safetensors before pickle).
MODEL_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
MODEL_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def model_weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files of a ``save_pretrained`` folder: the sharded index's files, or the single file."""
    folder = Path(folder)
    for index_name in MODEL_WEIGHT_INDEXES:
        index = folder / index_name
        if index.is_file():
            data = read_json(index, "sharded weights index")
            if not isinstance(data, dict) or not isinstance(data.get("weight_map"), dict):
                raise DataError("no weight_map", file=index, field="weight_map")
            return [folder / name for name in sorted(set(data["weight_map"].values()))]
    for name in MODEL_WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
    raise DataError("no model weights (model.safetensors, pytorch_model.bin or a sharded index)", file=folder)


def load_model_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a ``save_pretrained`` folder (all shards); a key in two shards is an error."""
    out: dict[str, torch.Tensor] = {}
    for path in model_weight_files(folder):
        part = load_weights_file(path)
        twice = sorted(set(part) & set(out))
        if twice:
            raise DataError(f"tensor {twice[0]} is also in another shard", file=path)
        out.update(part)
    return out


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOW_KEYS])
    return shown + (f" … and {len(keys) - SHOW_KEYS} more" if len(keys) > SHOW_KEYS else "")


def check_state_dict(
    got: Mapping[str, torch.Tensor],
    expected: Mapping[str, Iterable[int]],
    *,
    file: str | os.PathLike,
    what: str,
) -> None:
    """``got`` must have exactly the keys of ``expected`` (name → shape) with those shapes.

    ``file`` and ``what`` say where the tensors came from and what they should be, for the message.
    """
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if problems:
        raise DataError(f"does not hold the tensors of {what} ({'; '.join(problems)})", file=file)
    for key in sorted(expected):
        want, have = tuple(expected[key]), tuple(got[key].shape)
        if want != have:
            raise DataError(f"tensor {key} has shape {have}, {what} needs {want}", file=file)
