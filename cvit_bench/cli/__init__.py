"""The ``cvit-bench`` command line: parses options, shows progress, maps errors to exit codes.

One module per command in this package (``cli/<command>.py``), loaded lazily; every command calls one library
function; nothing here computes anything. Exit codes: 0 ok, 2 bad input or
inconsistent state (a :class:`~cvit_bench.errors.CvitError`, message printed without a traceback), 130 Ctrl-C.
"""
from __future__ import annotations

import importlib
import sys

import click

from .. import __version__
from ..errors import CvitError, escape_controls
from .common import console

#: command name → (module of this package, attribute). One module per command; a module is imported only when
#: its command runs or ``--help`` lists it, and imports its heavy libraries (torch, transformers, matplotlib)
#: inside the command function, so ``cvit-bench --help`` answers in a fraction of a second.
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("list_", "list_command"),
    "prepare": ("prepare", "prepare_command"),
    "export": ("export", "export_command"),
    "train": ("train", "train_command"),
    "evaluate": ("evaluate", "evaluate_command"),
    "score": ("score", "score_command"),
    "metrics": ("metrics", "metrics_command"),
    "report": ("report", "report_command"),
    "leaderboard": ("leaderboard", "leaderboard_group"),
    "demo": ("demo", "demo_command"),
    "import-run": ("import_run", "import_run_command"),
    "mini-base": ("mini_base", "mini_base_group"),
    "judge": ("judge", "judge_command"),
}


def refusal_message(exc: BaseException) -> str | None:
    """The one-line message of an error the user caused (exit 2), or None for a bug (traceback, exit 1).

    Besides :class:`CvitError`, an operating-system error on a path (``--out`` is a file, a folder is not
    writable, the disk is full) is the user's to fix: its message names the path. Control characters are
    escaped, so a hostile file or member name cannot reach the terminal raw."""
    if isinstance(exc, CvitError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        return None
    return escape_controls(text, keep_newlines=True)


class CvitGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (CvitError, OSError) as exc:
            from rich.text import Text

            message = refusal_message(exc)
            if message is None:
                raise
            console().print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            console().print("interrupted; finished work is kept (re-run the same command to resume)")
            sys.exit(130)


@click.group(cls=CvitGroup)
@click.version_option(__version__, prog_name="cvit-bench")
def main() -> None:
    """cvit-bench: benchmark harness for continual visual instruction tuning."""
    import os
    import warnings

    # Our own progress bars are shown; the libraries' per-load bars and a peft deprecation notice are noise.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


if __name__ == "__main__":
    main()
