"""``cvit-bench leaderboard build --board DIR --out SITE``: a static site (no server, no network).

Output::

    SITE/index.html                    # one table per board key, filters, search, "How to submit"
    SITE/entries/<entry id>.html       # one page per entry: numbers, flags, caveats, provenance, figures
    SITE/entries/<entry id>/heatmap.svg, forgetting.svg    # re-scored entries (figures from the report module)
    SITE/static/board.css, board.js    # the only style and script; no remote anything
    SITE/.nojekyll                     # GitHub Pages serves the folder as is

Rules:

- **Never mixed**: one table per :class:`~.board.BoardKey`. Within a table, re-scored entries, reported entries
  and reference rows sit in separate ``tbody`` sections; ranks (by AP, higher first, ties on the displayed
  value share a rank) are computed within the re-scored and the reported method rows separately; reference
  rows are never ranked; secondhand rows carry a visible "secondhand" label.
- **Untrusted text**: every string of an entry reaches HTML through Jinja2 autoescape; links are rendered only
  when they are ``https://`` (anything else is shown as inert text); figures are separate SVG files loaded with
  ``<img>`` (an SVG image cannot run script); a Content-Security-Policy meta tag allows only the site's own
  script, style and images (``default-src 'none'``).
- Numbers: 2 decimals as in the report; "nr" marks a value that is "reported, not recomputable", "⚑" a
  submitted number that differs from the recomputed one by more than 0.01.
- **Whole or nothing**: the site is rendered into a staging folder beside ``SITE`` and swapped in at once
  (:func:`cvit_bench.files.staged_folder`), so the live site is always a complete old or a complete new one,
  and pages of entries that left the board are gone with the old folder. An entry whose page cannot be
  rendered (a board file edited by hand) is left out of the site, index included, and reported in
  :attr:`SiteOutputs.skipped` (the CLI prints it); the other entries are published. ``SITE`` must be a site
  this builder wrote (or new, or empty): another folder is refused, never replaced.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from cvit_bench import __version__
from cvit_bench.errors import CvitError
from cvit_bench.files import atomic_write_bytes, atomic_write_text, dumps_json, sha256_bytes, staged_folder
from cvit_bench.report.figures import forgetting_figure, heatmap_figure, save_figure
from cvit_bench.report.formatting import fmt_aggregate, fmt_value, round2
from cvit_bench.report.html import flatten, make_environment, run_view
from cvit_bench.report.runs import Run
from cvit_bench.formats.results import SUMMARY_KEYS

from .board import NOT_RECOMPUTABLE, BoardKey, Entry, read_entries
from .replicates import MeanCI, SeedGroup, split_seed_groups
from .schema import is_https

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; base-uri 'none'; "
       "form-action 'none'; object-src 'none'")
BASE_SUMMARY_COLUMNS = ("AP", "MAP", "BWT", "MIF")
OPTIONAL_SUMMARY_COLUMNS = ("MFT",)
SECTIONS = (("rescored", "Re-scored by the board (predictions verified)"),
            ("reported", "Reported (numbers only, not re-scored)"),
            ("reference", "Reference rows (shown for context, never ranked)"))
STATIC_FILES = ("board.css", "board.js")


@dataclass
class CellView:
    text: str
    sort: str                               # numeric sort key ("" = empty, sorts last)
    marks: list[tuple[str, str]] = field(default_factory=list)   # (symbol, explanation)


@dataclass
class LinkView:
    label: str
    url: str
    safe: bool                              # False: shown as inert text, never as a link


@dataclass
class RowView:
    id: str
    name: str
    href: str
    family: str
    tier: str
    kind: str
    grade: str
    base_model: str
    rank: str
    cells: list[CellView]
    links: list[LinkView]
    flagged: bool
    seeds: list[tuple[str, str]] = field(default_factory=list)   # (label, href) of each seed's entry page


@dataclass
class SectionView:
    tier: str
    title: str
    rows: list[RowView]


@dataclass
class BoardView:
    key: BoardKey
    anchor: str
    title: str
    task_columns: list[str]
    summary_columns: list[str]
    sections: list[SectionView]
    n_entries: int
    summary_labels: dict[str, str] = field(default_factory=dict)   # CoIN boards: AP shown as ACC, MAP as MAA


# ------------------------------------------------------------------------------------------------ pure views
def group_entries(entries: list[Entry]) -> dict[BoardKey, list[Entry]]:
    groups: dict[BoardKey, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.board, []).append(e)
    # Boards with re-scored entries first, then cvit-bench's own benchmarks, then the rest (each by key).
    def order(item: tuple[BoardKey, list[Entry]]) -> tuple[bool, bool, BoardKey]:
        key, members = item
        return (not any(e.tier == "rescored" for e in members), not key.benchmark.startswith("cvit"), key)

    return dict(sorted(groups.items(), key=order))


def entry_links(entry: Entry) -> list[LinkView]:
    links = [LinkView(label, str(url), is_https(url)) for label, url in sorted((entry.links or {}).items()) if url]
    if entry.source and entry.source.get("url"):
        links.append(LinkView("source", str(entry.source["url"]), is_https(entry.source["url"])))
    return links


def _ap_key(entry: Entry) -> float:
    ap = entry.summary.get("AP")
    return round2(ap) if isinstance(ap, (int, float)) else float("-inf")


def ranks(entries: list[Entry]) -> dict[str, str]:
    """Competition ranking by displayed AP (1, 2, 2, 4); entries without AP are unranked."""
    out: dict[str, str] = {}
    ordered = sorted(entries, key=lambda e: (-_ap_key(e), e.name))
    position = 0
    previous = None
    for i, e in enumerate(ordered, start=1):
        if _ap_key(e) == float("-inf"):
            out[e.id] = ""
            continue
        if _ap_key(e) != previous:
            position, previous = i, _ap_key(e)
        out[e.id] = str(position)
    return out


def summary_cell(entry: Entry, key: str) -> CellView:
    value = entry.summary.get(key)
    marks = []
    if value is not None and entry.summary_status.get(key) == NOT_RECOMPUTABLE:
        marks.append(("nr", NOT_RECOMPUTABLE))
    for f in entry.flags:
        if f.get("field") == f"summary.{key}":
            marks.append(("⚑", f"submitted {fmt_aggregate(f.get('submitted'))}, recomputed {fmt_aggregate(f.get('recomputed'))}"))
    return CellView(fmt_aggregate(value), "" if value is None else repr(float(value)), marks)


def task_cell(entry: Entry, task: str) -> CellView:
    value = entry.final_row.get(task)
    return CellView(fmt_value(value), "" if value is None else repr(float(value)))


def row_view(entry: Entry, rank: str, tasks: list[str], summary_columns: list[str]) -> RowView:
    cells = [task_cell(entry, t) for t in tasks] + [summary_cell(entry, k) for k in summary_columns]
    return RowView(id=entry.id, name=entry.name, href=f"entries/{entry.id}.html", family=entry.family, tier=entry.tier,
                   kind=entry.kind, grade=entry.grade, base_model=entry.board.base_model, rank=rank, cells=cells,
                   links=entry_links(entry), flagged=bool(entry.flags))


def ci_cell(ci: MeanCI | None, n_total: int, fmt) -> CellView:
    """Mean ± 95 % CI half-width over seeds; a mark says when fewer seeds than the group's have a value."""
    if ci is None:
        return CellView(fmt(None), "")
    text = fmt(ci.mean) if ci.half_width is None else f"{fmt(ci.mean)} ± {fmt(ci.half_width)}"
    marks = [(f"n={ci.n}", f"mean of {ci.n} of {n_total} seeds")] if ci.n < n_total else []
    return CellView(text, repr(float(ci.mean)), marks)


def group_row_view(group: SeedGroup, rank: str, tasks: list[str], summary_columns: list[str]) -> RowView:
    """One row for a method over several seeds (see :mod:`.replicates`); its name links to the first seed."""
    n = len(group.entries)
    row = row_view(group.as_entry(), rank, tasks, summary_columns)
    row.cells = ([ci_cell(group.task(t), n, fmt_value) for t in tasks]
                 + [ci_cell(group.summary(k), n, fmt_aggregate) for k in summary_columns])
    row.href = f"entries/{group.entries[0].id}.html"
    row.seeds = [(f"seed {e.seed}", f"entries/{e.id}.html") for e in group.entries]
    return row


def board_view(key: BoardKey, entries: list[Entry]) -> BoardView:
    tasks: list[str] = []
    for e in entries:
        tasks.extend(t for t in e.tasks if t not in tasks)
    present = {k for e in entries for k, v in e.summary.items() if v is not None}
    summary_columns = [k for k in OPTIONAL_SUMMARY_COLUMNS if k in present] + list(BASE_SUMMARY_COLUMNS)
    sections = []
    for tier, title in SECTIONS:
        members = [e for e in entries if (e.kind == "reference") == (tier == "reference")
                   and (tier == "reference" or e.tier == tier)]
        singles, groups = split_seed_groups(members)
        standing = {g.as_entry().id: g for g in groups}
        members = singles + [g.as_entry() for g in groups]
        ranked = ranks(members) if tier != "reference" else {e.id: "" for e in members}
        members.sort(key=lambda e: (-_ap_key(e), e.name))
        rows = [group_row_view(standing[e.id], ranked[e.id], tasks, summary_columns) if e.id in standing
                else row_view(e, ranked[e.id], tasks, summary_columns) for e in members]
        if rows:
            sections.append(SectionView(tier, title, rows))
    return BoardView(key=key, anchor=f"board-{key.slug()}", title=key.describe(), task_columns=tasks,
                     summary_columns=summary_columns, sections=sections, n_entries=len(entries),
                     summary_labels=_summary_labels(key.benchmark, summary_columns))


def _summary_labels(benchmark_id: str, columns: list[str]) -> dict[str, str]:
    from cvit_bench.benchmark import benchmark_ids, load_benchmark

    if benchmark_id not in benchmark_ids():
        return {}
    spec = load_benchmark(benchmark_id)
    return {c: spec.summary_label(c) for c in columns if spec.summary_label(c) != c}


def entry_facts(entry: Entry) -> list[tuple[str, str]]:
    extra = entry.extra_data or {}
    facts = [("method", entry.name), ("family", entry.family), ("description", str(entry.method.get("description") or "")),
             ("tier", entry.tier), ("kind", entry.kind), ("board", entry.board.describe()),
             ("base model", str(entry.base_model.get("name", ""))), ("base model revision", str(entry.base_model.get("revision", ""))),
             ("trainable parameters", "" if entry.trainable_params is None else f"{entry.trainable_params:,}"),
             ("extra data", ("yes: " + str(extra.get("description") or "")) if extra.get("used") else "no"),
             ("contact", entry.contact), ("submitted (UTC)", entry.submitted_utc),
             ("bundle sha256", entry.bundle_sha256 or "")]
    facts += [(f"checkpoint {i}", h) for i, h in enumerate(entry.checkpoints, start=1)]
    facts += [(f"replaced version {i}", f"submitted {h.get('submitted_utc', '')}, replaced {h.get('replaced_utc', '')}"
               f"{' by the maintainer over its owner (--force)' if h.get('forced') else ''}, "
               f"bundle sha256 {h.get('bundle_sha256') or ''}") for i, h in enumerate(entry.history, start=1)]
    return [(k, v) for k, v in facts if v]


# ------------------------------------------------------------------------------------------------ rendering
def _environment() -> jinja2.Environment:
    return make_environment([jinja2.PackageLoader("cvit_bench.leaderboard", "templates")])


def _static_dir() -> Path:
    return Path(str(resources.files("cvit_bench.leaderboard"))) / "static"


@dataclass(frozen=True)
class SiteOutputs:
    out_dir: Path
    index: Path
    pages: tuple[Path, ...]
    skipped: tuple[tuple[str, str], ...] = ()      # (entry id, why its page could not be rendered)


SITE_MARK = ".nojekyll"          # every site we build has it; a folder with other content and without it is not ours


def check_site_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CvitError(f"{out}: the site folder is a file")
    if out.is_dir() and any(out.iterdir()) and not (out / SITE_MARK).exists():
        raise CvitError(f"{out}: not empty and not a site built by `cvit-bench leaderboard build` (no {SITE_MARK}); "
                        "building would replace it, so choose another --out")


def _options(values: list[str]) -> list[str]:
    return sorted(set(values), key=str.lower)


def build_site(board: str | os.PathLike, out: str | os.PathLike, *, title: str = "cvit-bench leaderboard",
               submit_url: str | None = None, figure_cache: str | os.PathLike | None = None) -> SiteOutputs:
    """Render every entry of ``board`` into a static site in ``out`` (see the module docstring). ``submit_url``:
    the page of a submission server (``leaderboard serve``) that "How to submit" points to. ``figure_cache``: a
    folder of figures keyed by the hash of what they show, so a rebuild renders only new entries' figures (the
    server rebuilds the site on every approval)."""
    entries = read_entries(board)
    out = Path(out)
    check_site_target(out)
    env = _environment()
    common = {"csp": CSP, "version": __version__, "title": title}
    with staged_folder(out, "build") as stage:
        boards = [board_view(k, v) for k, v in group_entries(entries).items()]
        pages, skipped, shown = [], [], []
        for e in entries:
            try:
                pages.append(_write_entry_page(env, e, stage, common, boards,
                                               Path(figure_cache) if figure_cache is not None else None
                                               ).relative_to(stage))
                shown.append(e)
            except Exception as exc:   # noqa: BLE001 - reported per entry; the rest of the board is published
                shutil.rmtree(stage / "entries" / e.id, ignore_errors=True)
                skipped.append((e.id, f"{type(exc).__name__}: {exc}"))
        if skipped:
            boards = [board_view(k, v) for k, v in group_entries(shown).items()]
        (stage / "static").mkdir()
        for name in STATIC_FILES:
            shutil.copyfile(_static_dir() / name, stage / "static" / name)
        atomic_write_text(stage / SITE_MARK, "")
        atomic_write_text(stage / "index.html", env.get_template("index.html.j2").render(
            **common, boards=boards, families=_options([e.family for e in shown]),
            base_models=_options([e.board.base_model for e in shown]), tiers=["rescored", "reported"],
            n_entries=len(shown), static="static/", submit_url=submit_url))
    return SiteOutputs(out_dir=out, index=out / "index.html", pages=tuple(out / p for p in pages),
                       skipped=tuple(skipped))


def _cached_figure(cache: Path | None, entry: Entry, name: str, make, target_stem: Path) -> None:
    """Write ``target_stem.svg``: copied from ``cache`` when a figure of the same results was rendered before."""
    if cache is None:
        save_figure(make(entry.results, f"{entry.name}: {name}"), target_stem, ["svg"])
        return
    key = sha256_bytes(f"{__version__}\n{name}\n{entry.name}\n{dumps_json(entry.results)}".encode("utf-8"))
    cached = cache / key[:2] / f"{key}.svg"
    if not cached.is_file():
        save_figure(make(entry.results, f"{entry.name}: {name}"), cached.with_suffix(""), ["svg"])
    atomic_write_bytes(target_stem.with_name(f"{target_stem.name}.svg"), cached.read_bytes())


def _write_entry_page(env: jinja2.Environment, entry: Entry, out: Path, common: dict[str, Any],
                      boards: list[BoardView], figure_cache: Path | None = None) -> Path:
    folder = out / "entries"
    run = None
    figures: list[tuple[str, str]] = []
    if entry.results is not None:
        run = run_view(Run(path=None, label=entry.name, slug=entry.id, results=entry.results))
        for name, make, caption in (("heatmap", heatmap_figure, "accuracy matrix: rows = after stage, columns = tasks; diagonal outlined"),
                                    ("forgetting", forgetting_figure, "each task's score from the stage it was learned")):
            _cached_figure(figure_cache, entry, name, make, folder / entry.id / name)
            figures.append((f"{entry.id}/{name}.svg", caption))
    board = next(b for b in boards if b.key == entry.board)
    keys = [k for k in SUMMARY_KEYS if k in entry.summary] + sorted(k for k in entry.summary if k not in SUMMARY_KEYS)
    summary = [(k, summary_cell(entry, k), entry.summary_status.get(k, "")) for k in keys]
    page = folder / f"{entry.id}.html"
    atomic_write_text(page, env.get_template("entry.html.j2").render(
        **common, entry=entry, board=board, facts=entry_facts(entry), links=entry_links(entry), summary=summary,
        final=[(t, task_cell(entry, t)) for t in entry.tasks], run=run, figures=figures,
        source=flatten(entry.source) if entry.source else [], static="../static/"))
    return page
