"""The optional extras of the distribution and the check a command makes before it needs one.

The core install scores prediction files, computes metrics, builds reports and packs, verifies and publishes
leaderboard submissions; running models (``[hf]``), training (``[train]``) and the submission server
(``[server]``) are extras (pyproject.toml ``[project.optional-dependencies]``). A command that needs a missing
extra refuses up front with :class:`MissingExtraError` (exit 2 in the CLI) naming the extra to install, instead
of failing deep inside with a bare ``ModuleNotFoundError``.
"""
from __future__ import annotations

import importlib.util

from .errors import CvitError

#: extra → the top-level modules it provides (import names, not distribution names). Keep in step with
#: pyproject.toml's optional dependencies.
EXTRAS: dict[str, tuple[str, ...]] = {
    "hf": ("torch", "transformers", "peft", "accelerate"),
    "train": ("torch", "transformers", "peft", "accelerate"),
    "server": ("starlette", "uvicorn", "sqlalchemy", "python_multipart"),
}


class MissingExtraError(CvitError):
    """A command needs an optional extra that is not installed."""

    def __init__(self, extra: str, what: str, missing: list[str]) -> None:
        self.extra = extra
        self.missing = missing
        super().__init__(f"{what} needs the {extra!r} extra: pip install 'cvit-bench[{extra}]' "
                         f"(not importable: {', '.join(missing)})")


def _importable(module: str) -> bool:
    # find_spec only locates the module (no import, so checking costs nothing); a finder that refuses the name
    # raises ImportError, which means the same as not found.
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported, in registry order (empty when the extra is installed)."""
    return [m for m in EXTRAS[extra] if not _importable(m)]


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` is importable; ``what`` names the
    command or feature that needs it (``"cvit-bench evaluate"``)."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(extra, what, missing)
