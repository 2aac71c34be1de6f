"""The command line is thin and starts fast: ``--help`` imports no heavy library (the timing itself is measured
by bench/cli_startup.py, never asserted), every command is its own module, and errors still map to exit 2."""
from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from cvit_bench.cli import COMMANDS, main

PROBE = """
import runpy, sys
sys.argv = ['cvit-bench'] + sys.argv[1:]
try:
    runpy.run_module('cvit_bench', run_name='__main__')
except SystemExit:
    pass
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'matplotlib', 'peft', 'pandas',
                                                         'pyarrow', 'datasets', 'numpy'})
print('HEAVY', heavy)
"""


def _heavy_after(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    return proc.stdout.strip().splitlines()[-1]


def test_help_and_command_help_import_no_heavy_library():
    assert _heavy_after("--help") == "HEAVY []"
    for command in ("evaluate", "train", "report", "metrics", "leaderboard"):
        assert _heavy_after(command, "--help") == "HEAVY []", command


def test_every_command_is_listed_and_has_help():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output
        assert CliRunner().invoke(main, [name, "--help"]).exit_code == 0


def test_report_figure_formats_match_the_library():
    from cvit_bench.cli.report import FIGURE_FORMATS
    from cvit_bench.report.figures import FIGURE_FORMATS as LIBRARY

    assert FIGURE_FORMATS == LIBRARY


def test_unknown_method_is_exit_code_2_listing_the_methods():
    result = CliRunner().invoke(main, ["train", "--method", "nope", "--show-options"])
    assert result.exit_code == 2
    assert "unknown method 'nope'" in result.output and "seq-lora" in result.output and "smolora" in result.output
