"""The sweep part of the HTML report: the cells of a sweep directory, its robustness matrices as heatmaps (with
the numbers as tables) and the worst case vs epsilon per cell.

A sweep directory (:mod:`kwta_robust.sweep`) holds ``sweep.json`` (the manifest: every cell, its status and last
error) and one record per finished cell; :func:`load_sweep` reads the manifest's record paths, or, without a
manifest, every ``cells/*/eval-*.json``. Matrices come from :func:`kwta_robust.matrix.build_matrices` — the same
numbers as ``matrices.md`` — and only complete records are used.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from kwta_robust.errors import ConfigError
from kwta_robust.html import Markup, Section, el, simple_table, table_html
from kwta_robust.numbers import interval_percent_texts, number_text, percent_text
from kwta_robust.matrix import (CLEAN, DENSE, MARK, RobustnessMatrix, build_matrices, cell_name, clean_matrix,
                                describe_cells, legend, matrices_by_point, matrix_table, method_text, ratio_text,
                                row_axis_label, sparsity_text)
from kwta_robust.matrix_flags import mark_meaning
from kwta_robust.record_checks import check_record
from kwta_robust.record_flags import HarnessRevision
from kwta_robust.report import NORM_TEXT
from kwta_robust.results import EvalRecord, unencodable_field
from kwta_robust.safe_paths import check_path_text, is_inside, resolve_path
from kwta_robust.sweep_lost import LostCell, mark_lost, read_cell_record
from kwta_robust.svg import DASHES, MARKER_SHAPES, Axis, HeatCell, Point, Series, colour, heatmap, line_chart

MANIFEST = "sweep.json"


@dataclass
class SweepRun:
    """What a sweep directory holds: its name and description, the manifest's cells and the complete records."""

    directory: Path
    name: str
    description: str = ""
    cells: list[dict] = field(default_factory=list)
    records: list[EvalRecord] = field(default_factory=list)
    lost: list[LostCell] = field(default_factory=list)  # listed as done, record missing/unreadable/partial
    of_records: bool = False  # report --matrix: records placed by their cells, no sweep ran (records_as_sweep)
    ran_by: str = ""  # the command that read the folder where it is not report (sweep: its own report.html)

    @property
    def command(self) -> str:
        """The command the user ran, which every error placing the records names: ``report --matrix`` for records
        given to it, else ``report --sweep`` or :attr:`ran_by` (it had said ``table --matrix``, a command the user
        had not run)."""
        return "report --matrix" if self.of_records else (self.ran_by or "report --sweep")

    @property
    def what(self) -> str:
        """What the page shows: ``sweep NAME``, or ``robustness matrices of N records`` (``report --matrix``)."""
        n = len(self.records)
        return f"robustness matrices of {n} record{'s' if n != 1 else ''}" if self.of_records else f"sweep {self.name}"


def _manifest(directory: Path) -> dict:
    """The manifest of the sweep folder ``directory`` (``{}`` without one); ``ConfigError`` if it is not a folder or
    its manifest cannot be read."""
    if not check_path_text(directory, "--sweep").is_dir():
        raise ConfigError(f"--sweep: {str(directory)!r} is not a directory; pass a sweep's --out-dir")
    manifest_path = directory / MANIFEST
    manifest: dict = {}
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise ConfigError(f"--sweep: {manifest_path} is not valid JSON; re-run the sweep to rewrite it") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("cells", []), list):
            raise ConfigError(f"--sweep: {manifest_path} is not a sweep manifest (its cells are not a list); re-run "
                              "the sweep to rewrite it")
        bad = unencodable_field(manifest)
        if bad is not None:
            raise ConfigError(f"--sweep: {manifest_path}: {bad} holds text that is not valid Unicode (a lone surrogate "
                              "such as \\ud800); re-run the sweep to rewrite it")
    return manifest


def _record_paths(directory: Path, cells: list[dict]) -> list[Path]:
    """The cell records of a sweep: the manifest's record paths, or without a manifest every ``cells/*/eval-*.json``.
    A manifest comes with a shared sweep folder: a record path that leads out of the folder (``../``, an absolute
    path, a symbolic link) is refused, so a report never reads and shows a file the folder does not hold."""
    if not cells:
        return sorted(directory.glob("cells/*/eval-*.json"))
    paths = []
    for cell in cells:
        if cell.get("record"):
            where = f"--sweep: {directory / MANIFEST}'s record"
            path = directory / check_path_text(str(cell["record"]), where)
            if not is_inside(resolve_path(path, where), resolve_path(directory, "--sweep")):
                raise ConfigError(f"--sweep: {directory / MANIFEST} lists the record {str(cell['record'])!r:.200}, "
                                  f"which is outside {directory}; a sweep's records are inside its folder (re-run "
                                  "the sweep to rewrite its manifest)")
            paths.append(path)
    return paths


def sweep_inputs(directory: str | Path) -> dict[str, Path]:
    """The files ``report --sweep directory`` reads (its manifest, the records it lists), by what they are to the
    command (``{"--sweep's manifest": path, "--sweep's record cells/a/eval-1.json": path, ...}``): an output must
    not overwrite them."""
    directory = Path(directory)
    cells = [c for c in _manifest(directory).get("cells", []) if isinstance(c, dict)]
    records = {f"--sweep's record {path.relative_to(directory)}": path for path in _record_paths(directory, cells)}
    return {"--sweep's manifest": directory / MANIFEST, **records}


def records_as_sweep(records: Sequence[EvalRecord], paths: Sequence[str | Path]) -> SweepRun:
    """``report --matrix``: ``records`` (read from ``paths``) as the cells of a sweep without a manifest, named by
    their common folder, so the page shows their matrices, heatmaps and curves as a sweep's report does (saying
    what they are: records placed in matrices, not a sweep; its errors name ``report --matrix``)."""
    folder = Path(os.path.commonpath([Path(p).resolve().parent for p in paths]))
    return SweepRun(folder, folder.name or str(folder), records=list(records), of_records=True)


def load_sweep(directory: str | Path, ran_by: str = "", harness: HarnessRevision | None = None) -> SweepRun:
    """Read a sweep directory (see the module docstring); ``ConfigError`` if it holds no complete record, a
    :class:`~kwta_robust.results.RecordError` naming the file if a complete one contradicts itself (as ``report``
    checks the records it is given: :func:`~kwta_robust.record_checks.check_record`). ``ran_by``: the command
    reading it where that is not ``report --sweep`` (``sweep``), named by the errors placing its records;
    ``harness``: the command's commit, looked up once for every record (:class:`HarnessRevision`)."""
    directory = Path(directory)
    manifest = _manifest(directory)
    cells = [c for c in manifest.get("cells", []) if isinstance(c, dict)]
    paths = _record_paths(directory, cells)
    records, lost = [], []
    # a manifest's cell listed as done whose record is gone or damaged: marked and noted, not shown as never run
    listed = [c for c in cells if c.get("record")] if cells else [{} for _ in paths]
    harness = HarnessRevision() if harness is None else harness  # the commit read once for every record
    for cell, path in zip(listed, paths):
        record, gone = read_cell_record(directory, cell, path)
        lost += [gone] if gone is not None else []
        if record is not None:
            check_record(record, str(path), harness=harness)
            records.append(record)
    if not records:
        raise ConfigError(f"--sweep: no complete cell record in {directory}; run or finish the sweep first")
    return SweepRun(directory, str(manifest.get("name") or directory.name), str(manifest.get("description") or ""),
                    cells, records, lost, ran_by=ran_by)


def _heatmap(m: RobustnessMatrix) -> str:
    cells = []
    for r in m.ratios:
        row = []
        for s in m.sparsities:
            acc = m.get(r, s)
            label = m.labels.get((r, s), "")
            flags = (m.flags.get((r, s)) or []) + (m.upper_bounds.get((r, s)) or [])  # what FLAG_MARK says
            if acc is None:
                lost = "".join(f"; {w}" for w in m.warnings.get((r, s)) or [])
                tip = f"{label or cell_name(r, s)}: no value{lost}"
                row.append(HeatCell(None, "—" + (MARK if lost else ""), tip=tip))
                continue
            bounds = ", ".join(interval_percent_texts(acc.ci_low, acc.ci_high))  # rounded outward, as every interval
            interval = f"[{bounds}]" if not m.noise else \
                f"{percent_text(acc.accuracy)}%" + (f" [{bounds}]" if math.isfinite(acc.ci_low) else "")
            warnings = m.warnings.get((r, s)) or []
            tip = (f"{label}: noise score {number_text(acc.correct)} on n={acc.n}, {interval} per image and level"
                   if m.noise else
                   f"{label}: {percent_text(acc.accuracy)}% {interval}, {acc.correct}/{acc.n}") + \
                (f"; flags: {', '.join(flags)}" if flags else "") + "".join(f"; not comparable: {w}" for w in warnings)
            text = (number_text(acc.correct) if m.noise else percent_text(acc.accuracy)) + (" !" if flags else "") + \
                (MARK if warnings else "")
            row.append(HeatCell(acc.accuracy, text, interval, tip))
        cells.append(row)
    method = method_text(m.pruning_method)
    return heatmap(cells, rows=[ratio_text(r) for r in m.ratios], columns=[sparsity_text(s) for s in m.sparsities],
                   title=m.title, x_label=f"weight sparsity{method}", y_label=row_axis_label(m.ratios),
                   colour_label="noise score per image and level (%)" if m.noise else
                   ("clean" if m.metric == CLEAN else "robust") + " accuracy (%)")


def _marks_caption(m: RobustnessMatrix) -> str | None:
    """What the heatmap's marks mean, where it has any (as the PNG heatmap's caption says it,
    :func:`kwta_robust.plots.heatmap_figure`): `` !`` after a cell with critical diagnostics flags or an upper-bound
    warning (:mod:`kwta_robust.matrix_flags`), :data:`MARK`
    after one not comparable with the others; ``None`` without marks."""
    meaning = mark_meaning(m.flags, m.upper_bounds, m.cells)
    said = [text for marked, text in (
        (meaning is not None, f"! = {meaning}"),
        (bool(m.warnings), f"{MARK} = not comparable with the other cells"),
    ) if marked]
    return "; ".join(said) + ": see the legend above" if said else None


def _curves(group: list[RobustnessMatrix], clean: RobustnessMatrix | None) -> str:
    first = group[0]
    series = []
    ratios = first.ratios
    for r, s in describe_cells(first):
        pts = []
        entries = ([(0.0, "clean", clean.get(r, s))] if clean is not None else []) + \
            [(m.eps, m.eps_text, m.get(r, s)) for m in group if m.eps is not None]
        for eps, text, acc in entries:
            if acc is not None:
                bounds = ", ".join(interval_percent_texts(acc.ci_low, acc.ci_high))  # outward, as every interval
                pts.append(Point(eps, acc.accuracy, tip=f"k/N={ratio_text(r)}, s={s:g} at {text}: "
                                                         f"{percent_text(acc.accuracy)}% [{bounds}]"))
        if pts:
            j = first.sparsities.index(s)
            i = ratios.index(r)  # k/N: colour and marker shape; weight sparsity: dash pattern
            series.append(Series(f"k/N={ratio_text(r)}, s={s:g}", pts, colour(i), DASHES[j % len(DASHES)],
                                 marker=MARKER_SHAPES[i % len(MARKER_SHAPES)]))
    norm = NORM_TEXT.get(first.norm or "", first.norm or "")
    ticks = ([(0.0, "0")] if clean is not None else []) + [(m.eps, m.eps_text or f"{m.eps:g}") for m in group
                                                            if m.eps is not None]
    method = "no pruning" if first.pruning_method == DENSE else f"{first.pruning_method} pruning"
    what = f"{'+' if first.cumulative else ''}{first.metric}"
    return line_chart(series, title=f"{what} robust accuracy vs eps ({method})",
                      x_axis=Axis(f"epsilon ({norm}); 0 = clean accuracy", ticks))


def sweep_section(run: SweepRun) -> Section:
    """Cells, legend, a heatmap per matrix (numbers in a folded table) and the curves per metric."""
    matrices = build_matrices(run.records, title="", command=run.command)
    mark_lost(matrices, run.lost)
    if run.of_records:  # report --matrix: no sweep ran, the records given sit in the cells they declare or state
        parts = [el("p", el("b", run.what), ", placed by their cells (evaluate --grid-cell, a sweep's cell or the "
                                            f"model they state), from {run.directory}")]
    else:
        parts = [el("p", el("b", run.name), f": {run.description}" if run.description else "",
                    f" — {len(run.records)} complete cell records in {run.directory}")]
    if run.cells:
        rows = [[c.get("label"), c.get("kwta_ratio"), c.get("weight_sparsity"), c.get("pruning_method"),
                 c.get("status"), c.get("attempts"), c.get("test_accuracy"), c.get("error")] for c in run.cells]
        parts.append(el("details", el("summary", f"{len(run.cells)} cells (manifest)"),
                        simple_table(["cell", "k/N", "weight sparsity", "pruning", "status", "attempts",
                                      "test accuracy", "last error"], rows, numeric=(1, 2, 5, 6))))
        failed = [c.get("label") for c in run.cells if c.get("status") == "failed"]
        if failed:
            parts.append(el("p", el("b", "failed cells (no record): "), ", ".join(str(f) for f in failed),
                            class_="flag critical"))
    parts.append(el("ul", [el("li", n) for n in legend(matrices)], class_="notes"))
    figures = []
    for m in matrices:
        caption = _marks_caption(m)
        figures.append(el("figure", Markup(_heatmap(m)), el("figcaption", caption) if caption else None,
                          el("details", el("summary", "numbers"), table_html(matrix_table(m, with_legend=False)))))
    parts.append(el("div", figures, class_="charts"))
    curves = [_curves(group, clean_matrix(matrices, method))
              for (_, _, method), group in matrices_by_point(matrices).items()]
    if curves:
        parts.append(el("h3", "robust accuracy vs eps per cell"))
        parts.append(el("div", [el("figure", Markup(c)) for c in curves], class_="charts"))
    heading = "Robustness matrices" if run.of_records else "Sweep: robustness matrices"
    return Section("sweep", heading, Markup("".join(parts)))
