"""Load a pickle that may only hold plain data, refusing everything else before it can run.

Unpickling executes code: any ``GLOBAL``/``STACK_GLOBAL`` opcode imports a callable and ``REDUCE`` calls it
(``os.system`` is one line away). Plain data — dict, list, tuple, str, int, float, bool, None — is built by
opcodes that never look a name up, so :class:`PlainDataUnpickler` refuses *every* name lookup
(``find_class``) and persistent id; a file that needs one is refused with a :class:`DataError` naming the file
and the object it asked for, before anything is called. What does load is then walked once and anything
outside those types (bytes, sets, …) is refused as well, so callers can trust the shape.

Python 2 pickles (the RefCOCO ``refs(<splitBy>).p`` files were written by Python 2) store ``str`` as byte
strings; they are decoded as latin-1, which maps every byte and is what Python 3 readers of these files use.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from .errors import DataError, MissingFileError

PLAIN_TYPES = (dict, list, tuple, str, int, float, bool, type(None))


class PlainDataUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        raise DataError(f"refused: the pickle asks for {module}.{name}, but only plain data (dict, list, tuple, str, "
                        "int, float, bool, None) is admitted", file=self.path)

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("refused: the pickle uses a persistent id; only plain data is admitted", file=self.path)


def _check_plain(value: Any, path: Path, where: str = "top level") -> None:
    stack = [(value, where)]
    while stack:
        v, at = stack.pop()
        if type(v) not in PLAIN_TYPES:
            raise DataError(f"refused: {type(v).__name__} at {at}; only plain data is admitted", file=path)
        if type(v) is dict:
            for k, item in v.items():
                if type(k) not in PLAIN_TYPES or type(k) in (dict, list):
                    raise DataError(f"refused: a {type(k).__name__} key at {at}", file=path)
                stack.append((item, f"{at}[{k!r}]"))
        elif type(v) in (list, tuple):
            stack.extend((item, f"{at}[{i}]") for i, item in enumerate(v))


def load_plain_pickle(path: str | os.PathLike) -> Any:
    """The plain-data content of the pickle at ``path``; a DataError naming the file for anything else."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "pickle file")
    with open(path, "rb") as f:
        try:
            value = PlainDataUnpickler(f, path).load()
        except DataError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                UnicodeDecodeError, MemoryError) as exc:
            raise DataError(f"not a readable pickle ({type(exc).__name__}: {exc})", file=path) from None
    _check_plain(value, path)
    return value
