"""How numbers and untrusted names are written in each output format (one rule per format, shared by all).

Numbers: 2 decimals on the displayed scale (percent, or CIDEr x100 as stored), ``-0.00`` written ``0.00``.
A null matrix cell is blank; a null aggregate is an em dash ("—", ``--`` in LaTeX) (docs/continual-metrics.md, Missing cells).
Names come from results files and are untrusted: every writer escapes them for its format.
"""
from __future__ import annotations

NULL_AGGREGATE = "—"

_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # OT1-encoded fonts print these two as inverted punctuation; the text commands are safe everywhere.
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}
_LATEX_TABLE = str.maketrans(_LATEX_ESCAPES)

_MARKDOWN_SPECIAL = "\\`*_[]<>|#"


def round2(value: float) -> float:
    """The value as displayed (2 decimals); used for comparisons so that ties on paper are ties here."""
    rounded = round(float(value), 2)
    return 0.0 if rounded == 0 else rounded


def fmt_value(value: float | None, null: str = "") -> str:
    """``12.3456 -> "12.35"``; ``None -> null``."""
    if value is None:
        return null
    return f"{round2(value):.2f}"


def fmt_aggregate(value: float | None) -> str:
    return fmt_value(value, NULL_AGGREGATE)


def fmt_csv(value: float | None) -> str:
    """CSV keeps full precision (machines read it): ``repr`` of the float, empty for null."""
    if value is None:
        return ""
    return repr(float(value))


def escape_latex(text: str) -> str:
    """Escape the LaTeX specials ``\\ & % $ # _ { } ~ ^`` (and ``< >``) so any name compiles as plain text."""
    return str(text).translate(_LATEX_TABLE)


def escape_markdown(text: str) -> str:
    """Backslash-escape Markdown/HTML-significant characters; newlines become spaces (a table row is one line)."""
    text = " ".join(str(text).split())
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in text)


def escape_mpl(text: str) -> str:
    """Matplotlib treats text between ``$`` signs as mathtext; escape them so names print literally."""
    return str(text).replace("$", r"\$")
