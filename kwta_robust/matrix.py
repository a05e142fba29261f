"""Robustness matrices: activation sparsity × weight sparsity, rendered from evaluation records only.

One matrix per metric — clean accuracy, the per-sample worst case over the suite and each attack — per threat
point (norm, eps) and per pruning method:

* rows: kWTA activation sparsity ``k/N`` (fraction of units each top-k gate keeps; ties with the k-th largest kept
  too by our layers, by a gate of one's own as its code keeps them), ``1.0`` being the ReLU twin (the same
  architecture with ReLU activations; a kWTA layer at ``k = N`` would keep negative values, so it is not used);
* columns: target weight sparsity (fraction of the pruned layers' weights set to zero by the pruning method; ``0`` =
  dense, shared by every method's matrix); the sparsity measured from each cell's tensors is in the legend;
* cells: accuracy in % with its 95 % interval (the record's, Wilson score), over the record's ``n`` samples.

After them, a matrix per noise probe the records ran with the same settings: its noise score per cell (Ahmad &
Scheinkman 2019), with its t interval over the samples where the record holds per-sample counts, and, with
``noise_levels`` (``table --matrix``), a matrix per noise level of its accuracy (:mod:`kwta_robust.noise_matrix`).

The legend (:func:`legend`) also names the cells with critical diagnostics flags (e.g. gradient masking) and
the cells whose numbers are not comparable with the others' (:mod:`kwta_robust.matrix_checks`: another evaluation
config, a worst case over other attacks, a declared weight sparsity the tensors contradict): those cells carry
:data:`MARK` in Markdown, LaTeX and HTML and say why in the ``warnings`` column of the long table (CSV, JSON). An
attack that ran with other effective settings in some cells is a legend note too (:mod:`kwta_robust.comparability`).
A cell whose record holds a critical flag or a warning that its numbers are overstated upper bounds carries ``!``
in every format, with a legend line and the long table's ``flags`` column (:mod:`kwta_robust.matrix_flags`).

A record is placed by ``record.model["sweep_cell"]`` (written by :mod:`kwta_robust.sweep`), by
``record.model["grid_cell"]`` (declared with ``evaluate --grid-cell``, :func:`parse_grid_cell`: a model that is not
ours, whose kWTA ratio and pruning the harness cannot read from a checkpoint's metadata) or, for any other record, by
what it measured: ``activation``/``kwta_ratio`` and the pruning metadata of its checkpoint
(``training.pruning.method`` / ``target_sparsity``; none = dense). Two records on the same cell are an error, and
so is a sweep cell's record declared on another cell. A ``compare`` record fills its cell as ``evaluate`` would:
its transfer attacks left out, its worst case over the config's attacks, the flags of the checks that read them
recomputed without them where this code wrote it (:mod:`kwta_robust.matrix_transfer`, which says what it keeps).

Tables: :func:`matrix_table` (one per matrix) and :func:`long_table` (a row per (matrix, cell), every number in its
own column, ready for a pivot); the formats of :mod:`kwta_robust.formats` render them (Markdown and LaTeX one
table per matrix, CSV and JSON the long table).
In cascade mode an attack's matrix after the first attack of the suite is *cumulative* (robust after that attack
and every earlier one at the same epsilon), as in the records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from attacks.base import threat_text
from kwta_robust.comparability import recipe_notes, settings_notes
from kwta_robust.config_digest import identity_hash
from kwta_robust.errors import ConfigError
from kwta_robust.fresh_record import probed_model
from kwta_robust.grid_cell import DECLARED_METHOD, DENSE, GRID_CELL_KEYS, parse_grid_cell  # noqa: F401 - re-exported
from kwta_robust.noise_matrix import (NoiseLevel, NoiseScore, correct_unit, noise_metrics, noise_value, percent_cell,
                                      score_cell)
from kwta_robust.matrix_checks import (cell_problems, cell_range_problem, check_sweep_cell, family_hint,
                                       gate_ratios, gates_found_text, grid_cell_to_declare, leave_out_of, own_cell,
                                       worst_case_differences)
from kwta_robust.matrix_flags import (FLAG_MARK, cell_mark, critical_flags, critical_mark_note,  # noqa: F401
                                      is_flagged, upper_bound_flags, upper_bound_note, with_flags_column)
from kwta_robust.matrix_transfer import record_suites, transfer_note
from kwta_robust.numbers import percent_text
from kwta_robust.record_index import RecordIndex, indexed
from kwta_robust.record_values import shown_text
from kwta_robust.report import Cell, Table, is_cumulative, result_of, threat_points, weight_sparsity_value
from kwta_robust.results import Accuracy, EvalRecord

#: Row value (grid kWTA ratio) of the ReLU twin: the same architecture with ReLU activations.
RELU_RATIO = 1.0
CLEAN = "clean"
WORST = "worst case"
#: Mark of a cell that is not comparable with the others (its reason is in the legend and the long table).
MARK = "*"


@dataclass(frozen=True)
class CellCoordinates:
    """Where a record sits: ``kwta_ratio`` (:data:`RELU_RATIO` for ReLU), target ``weight_sparsity``,
    ``pruning_method`` (:data:`DENSE` if unpruned) and the weight sparsity measured from the evaluated tensors."""

    kwta_ratio: float
    weight_sparsity: float
    pruning_method: str
    measured_sparsity: float | None = None

    @property
    def activation(self) -> str:
        return "relu" if self.kwta_ratio == RELU_RATIO else "kwta"


def cell_coordinates(record: EvalRecord, command: str = "table --matrix") -> CellCoordinates:
    """Grid coordinates of ``record`` (module docstring); ``ConfigError`` naming ``command`` if it cannot be placed."""
    model, shown = probed_model(record), shown_text(record.label, quoted=True)  # a 100 kB label: its start and length
    measured = weight_sparsity_value(record)  # a bare fraction too, as records may hold it (was an AttributeError)
    declared = {}
    for key in ("sweep_cell", "grid_cell"):
        cell = model.get(key)
        if not isinstance(cell, dict):
            continue
        try:
            declared[key] = CellCoordinates(float(cell["kwta_ratio"]), float(cell["weight_sparsity"]),
                                            str(cell["pruning_method"]), measured)
            problem = cell_range_problem(declared[key].kwta_ratio, declared[key].weight_sparsity)
            if problem is not None:  # was a row or column 'nan', 'inf', '2.5' of its own
                raise ValueError(problem)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{command}: record {shown}: model.{key} is malformed "
                              f"({type(exc).__name__}: {exc}); it needs kwta_ratio, weight_sparsity (numbers) and "
                              "pruning_method") from None
    sweep, grid = declared.get("sweep_cell"), declared.get("grid_cell")
    check_sweep_cell(record.label, model, RELU_RATIO, DENSE, command)  # a cell record edited by hand: refused
    if sweep is not None and grid is not None and (
            (sweep.kwta_ratio, sweep.weight_sparsity) != (grid.kwta_ratio, grid.weight_sparsity)
            or grid.pruning_method not in (DECLARED_METHOD, sweep.pruning_method)):
        raise ConfigError(f"{command}: record {shown} sits in sweep cell "
                          f"kwta_ratio={sweep.kwta_ratio:g}, weight_sparsity={sweep.weight_sparsity:g} "
                          f"({sweep.pruning_method}) but was declared "
                          f"--grid-cell kwta_ratio={grid.kwta_ratio:g},weight_sparsity={grid.weight_sparsity:g},"
                          f"pruning_method={grid.pruning_method}; evaluate it again with --grid-cell "
                          f"kwta_ratio={sweep.kwta_ratio:g},weight_sparsity={sweep.weight_sparsity:g},"
                          f"pruning_method={sweep.pruning_method} (the sweep's cell; nothing is evaluated again)")
    if sweep is not None or grid is not None:
        return sweep or grid
    own = own_cell(model, RELU_RATIO, DENSE, record.label, command)  # a stated pruning naming no column: refused there
    gates = gate_ratios(record)
    if own is None or (model.get("activation") == "relu" and gates):  # ReLUs beside top-k gates: not the twin
        found = f"; the layer probe found top-k gates in {gates_found_text(record)}" if gates else ""
        cell = grid_cell_to_declare(record) if gates else "--grid-cell kwta_ratio=R,weight_sparsity=S"
        label = record.label if len(record.label) <= 40 and "'" not in record.label else "LABEL"
        how = (f"with {cell} and a new --out (a record with transfer attacks, compare's or evaluate_model's given "
               f"transfer_sources=, is not resumed by evaluate), or, for a compare record, run its compare again "
               f"adding --grid-cell '{label}={cell.split()[1]}' (nothing is evaluated again)"
               if record.provenance.get("transfer_sources")
               else f"with {cell} (its finished units are kept)")
        raise ConfigError(f"{command}: record {shown} has activation {model.get('activation')!r} "
                          f"(kwta_ratio {model.get('kwta_ratio')!r}){found}; a matrix row needs ReLU without top-k "
                          f"gates or one kWTA ratio: evaluate it again {how}")
    ratio, sparsity, method = own
    if model.get("activation") == "kwta" and ratio == RELU_RATIO:
        raise ConfigError(f"{command}: record {shown} is a kWTA model at k/N 1.0, which keeps every "
                          "unit (negative ones too: not a ReLU); row 1.0 of a matrix is the ReLU twin, so leave "
                          f"this record out of {leave_out_of(command)}")
    if not sparsity or method is None:  # no training section, or no pruning target: dense
        return CellCoordinates(ratio, 0.0, DENSE, measured)
    return CellCoordinates(ratio, sparsity, method, measured)


def ratio_text(ratio: float) -> str:
    """Row label: ``1.0 (ReLU twin)`` or the ratio."""
    return "1.0 (ReLU twin)" if ratio == RELU_RATIO else f"{ratio:g}"


def row_axis_label(ratios: Sequence[float]) -> str:
    """The rows' axis as the heatmaps (HTML, PNG) name it, in the words of the Markdown matrix's legend ("Rows: kWTA
    activation sparsity k/N ...; 1.0 = the ReLU twin") and row label (``1.0 (ReLU twin)``): ``kWTA k/N``, and where
    a row is the ReLU twin (no top-k gate, which ``kWTA k/N`` alone misnamed) ``activation (kWTA k/N; 1.0 = ReLU
    twin)``."""
    return "activation (kWTA k/N; 1.0 = ReLU twin)" if RELU_RATIO in ratios else "kWTA k/N"


def sparsity_text(sparsity: float) -> str:
    """A sparsity as the matrices label it (``0 (dense)`` for 0)."""
    return "0 (dense)" if sparsity == 0.0 else f"{sparsity:g}"


@dataclass
class RobustnessMatrix:
    """One metric at one threat point for one pruning method: ``cells[(ratio, sparsity)]`` → accuracy.

    ``metric`` is :data:`CLEAN`, :data:`WORST` or an attack label; ``norm``/``eps`` are ``None`` for clean
    accuracy. ``ratios`` are the rows (ReLU first, then decreasing ``k/N``), ``sparsities`` the columns
    (increasing). ``cumulative``: cascade-mode robust accuracy after this and every earlier attack.
    """

    metric: str
    norm: str | None
    eps: float | None
    eps_text: str | None
    pruning_method: str
    ratios: list[float]
    sparsities: list[float]
    cells: dict[tuple[float, float], Accuracy | NoiseScore | NoiseLevel] = field(default_factory=dict)
    measured: dict[tuple[float, float], float | None] = field(default_factory=dict)
    labels: dict[tuple[float, float], str] = field(default_factory=dict)
    flags: dict[tuple[float, float], list[str]] = field(default_factory=dict)  # critical diagnostics codes
    upper_bounds: dict[tuple[float, float], list[str]] = field(default_factory=dict)  # FLAG_MARK warning codes
    warnings: dict[tuple[float, float], list[str]] = field(default_factory=dict)  # why not comparable (MARK)
    cumulative: bool = False
    title_prefix: str = ""
    notes: list[str] = field(default_factory=list)
    noise: bool = False  # a noise probe's score (:mod:`kwta_robust.noise_matrix`): a t interval, not Wilson's
    noise_level: bool = False  # a noise probe's accuracy at one level (``metric``: ``noise numenta level 0.1``)

    def get(self, ratio: float, sparsity: float) -> Accuracy | NoiseScore | NoiseLevel | None:
        return self.cells.get((ratio, sparsity))

    @property
    def point_text(self) -> str:
        if self.norm is None:
            return "no attack"
        return threat_text(self.norm, self.eps_text)

    @property
    def n(self) -> int | None:
        """Samples per cell when all cells agree, else ``None``."""
        ns = {a.n for a in self.cells.values()}
        return ns.pop() if len(ns) == 1 else None

    @property
    def title(self) -> str:
        what = "clean accuracy" if self.metric == CLEAN else f"{self.metric} score" if self.noise else \
            f"{self.metric} accuracy" if self.noise_level else \
            f"{'+' if self.cumulative else ''}{self.metric} robust accuracy at {self.point_text}"
        method = "no pruning" if self.pruning_method == DENSE else f"{self.pruning_method} pruning"
        ns = sorted({a.n for a in self.cells.values()})
        n = f", n={ns[0]}" if len(ns) == 1 else f", n={ns[0]}–{ns[-1]}: differs between cells" if ns else ""
        return f"{self.title_prefix}{what} ({method}{n})"


def _pruning_groups(coords: Sequence[CellCoordinates]) -> list[str]:
    methods: list[str] = []
    for c in coords:
        if c.pruning_method != DENSE and c.pruning_method not in methods:
            methods.append(c.pruning_method)
    return methods or [DENSE]


def _metrics(records: Sequence[EvalRecord]) -> list[tuple[str, str | None, str | None, float | None, str | None,
                                                         bool]]:
    """``(metric, attack label, norm, eps, eps_text, cumulative)`` in reading order: clean accuracy, the worst case
    at every threat point (the headline), then each attack (suite order) at every threat point (epsilons written
    alike in full: :func:`~kwta_robust.report.threat_points`, so no two matrices share a title). An attack labelled
    ``clean`` or ``worst case`` is the metric ``clean (attack)``: its matrix held the clean accuracy (or the worst
    case) under the clean matrix's title, as the wide table names such a column by its place."""
    points = threat_points(records)
    labels: dict[str, None] = {}  # dicts and sets, each record indexed once (lists' ``in`` was quadratic)
    found: set[tuple[str, str, float, bool]] = set()  # (label, norm, eps, cumulative): cascade and standalone apart
    worst: set[tuple[str, float]] = set()
    for rec in indexed(records):
        for norm, eps in rec.threat_points():
            at = rec.results_at(norm, eps)
            if rec.worst(norm, eps) is not None:
                worst.add((norm, eps))
            for r in at:
                labels.setdefault(r.label)
                found.add((r.label, norm, eps, is_cumulative(r)))
    out: list[tuple[str, str | None, str | None, float | None, str | None, bool]] = [
        (CLEAN, None, None, None, None, False)]
    out += [(WORST, None, norm, eps, text, False) for norm, eps, text in points if (norm, eps) in worst]
    for label in labels:
        metric = f"{label} (attack)" if label in (CLEAN, WORST) else label
        out += [(metric, label, norm, eps, text, cumulative) for norm, eps, text in points
                for cumulative in (False, True) if (label, norm, eps, cumulative) in found]
    return out


def _value(record: RecordIndex, metric: str, norm: str | None, eps: float | None,
           cumulative: bool = False, label: str | None = None) -> Accuracy | None:
    """The accuracy of ``metric`` (``label``: an attack's) in ``record``."""
    if label is not None:
        r = result_of(record, label, norm, eps, cumulative)  # type: ignore[arg-type]
        return r.robust if r is not None else None
    if metric == CLEAN:
        return record.record.clean
    w = record.worst(norm, eps)  # type: ignore[arg-type]
    return w.robust if w is not None else None


def cell_name(ratio: float, sparsity: float) -> str:
    """``k/N 0.1 × 0.5``: a cell as notes and warnings name it."""
    return f"k/N {ratio_text(ratio)} × {sparsity_text(sparsity)}"


def build_matrices(records: Sequence[EvalRecord], *, title: str = "", notes: Sequence[str] = (),
                   command: str = "table --matrix", noise_levels: bool = False) -> list[RobustnessMatrix]:
    """Every matrix the records support (module docstring); a partial record is an error (its numbers would be
    mistaken for final). ``title`` prefixes every title; ``notes`` join the legend (e.g. a sweep's failed cells);
    ``noise_levels``: a matrix per noise level after each noise-score matrix (``table --matrix``);
    ``command`` starts every error (``report --matrix`` places records too). Records are named by their labels:
    read two records of one label with :func:`kwta_robust.results.load_records` (it tells them apart by path)."""
    if not records:
        raise ConfigError(f"{command}: no records given")
    partial = [r.label for r in records if r.status != "complete"]
    if partial:
        raise ConfigError(f"{command}: record {partial[0]!r} is partial (status not complete); finish it first")
    coords = [cell_coordinates(r, command) for r in records]
    prefix = f"{title}: " if title else ""
    suites = record_suites(records)  # a compare record's cell as evaluate fills it, and the flags recomputed
    transfer = transfer_note(records, suites, [cell_name(c.kwta_ratio, c.weight_sparsity) for c in coords])
    records = [found.view for found in suites]
    common_notes = _common_notes(records, coords) + transfer
    matrices = []
    names = [repr(r.label) for r in records]
    for method in _pruning_groups(coords):
        chosen = [(i, rec, c) for i, (rec, c) in enumerate(zip(records, coords)) if c.pruning_method in (method, DENSE)]
        placed: dict[tuple[float, float], int] = {}  # a cell: the index of its record (and coordinates)
        for i, rec, c in chosen:
            key = (c.kwta_ratio, c.weight_sparsity)
            j = placed.setdefault(key, i)
            if j != i:
                hashes = tuple(str(identity_hash(r.config, r.config_hash)) for r in (records[j], rec))  # two suites?
                configs = (f" (they ran different evaluation configs, hash {hashes[0][:10]} / {hashes[1][:10]}: pass "
                           "the records of one config)" if hashes[0] != hashes[1] else family_hint(records[j], rec))
                raise ConfigError(f"{command}: records {names[j]} and {names[i]} both sit at "
                                  f"k/N={ratio_text(key[0])}, weight sparsity {key[1]:g} ({method}); pass one record "
                                  f"per cell{configs}")
        ratios = sorted({k[0] for k in placed}, key=lambda r: (r != RELU_RATIO, -r))
        sparsities = sorted({k[1] for k in placed})
        group_records = [rec for _, rec, _ in chosen]
        by_name = {cell_name(*key): records[i] for key, i in placed.items()}
        cell_warnings = cell_problems(by_name, {cell_name(*key) for key in placed if key[1] == 0.0})
        index = {i: RecordIndex(records[i]) for i in placed.values()}  # looked up per metric: indexed once
        indexed_by_name = {cell_name(*key): index[i] for key, i in placed.items()}
        noise = noise_metrics(group_records, noise_levels)  # a matrix per noise probe and settings [and level]
        for metric, label, norm, eps, eps_text, cumulative in _metrics(group_records) + [
                (k, None, None, None, None, False) for k in noise]:
            probe = noise.get(metric) if norm is None else None
            point_warnings = {}  # the worst case is over the attacks each record ran: other suites, other minima
            if metric == WORST and label is None and norm is not None and eps is not None:
                point_warnings = worst_case_differences(indexed_by_name, norm, eps)
            m = RobustnessMatrix(metric, norm, eps, eps_text, method, ratios, sparsities, cumulative=cumulative,
                                 title_prefix=prefix, noise=probe is not None and probe.level is None,
                                 noise_level=probe is not None and probe.level is not None)
            for key, i in placed.items():
                rec, c = records[i], coords[i]
                acc = noise_value(rec, probe) if probe else _value(index[i], metric, norm, eps, cumulative, label)
                if acc is not None:
                    m.cells[key] = acc
                m.measured[key] = c.measured_sparsity
                m.labels[key] = rec.label
                m.flags[key], m.upper_bounds[key] = critical_flags(rec), upper_bound_flags(rec, norm, eps)
                reasons = [w[cell_name(*key)] for w in (cell_warnings, point_warnings) if cell_name(*key) in w]
                if reasons:
                    m.warnings[key] = reasons
            m.notes = common_notes + list(notes) + ([probe.note] if probe else []) + \
                _warning_notes(m, cell_warnings, point_warnings)
            matrices.append(m)
    return matrices


def _common_notes(records: Sequence[EvalRecord], coords: Sequence[CellCoordinates]) -> list[str]:
    notes = []  # cells named by place too: records of one's own models often share a label (their factory's)
    names = [f"{cell_name(c.kwta_ratio, c.weight_sparsity)}{method_text(c.pruning_method)}" for c in coords]
    ordered = sorted(zip(coords, names, records), key=lambda t: (-t[0].kwta_ratio, t[0].weight_sparsity))  # rows'
    flagged = [f"{name} {r.label} ({', '.join(critical_flags(r))})" for _, name, r in ordered if critical_flags(r)]
    if flagged:
        notes.append("critical diagnostics flags (e.g. gradient masking: the numbers of the attacks before the "
                     "flagged one are unreliable; see each record): " + "; ".join(flagged))
    notes += critical_mark_note(bool(flagged)) + upper_bound_note([(name, r) for _, name, r in ordered])
    declared = [name for r, name in zip(records, names) if r.model.get("grid_cell") and not r.model.get("sweep_cell")]
    which = ", ".join(declared) if len(declared) < len(names) else "every cell"
    if declared:  # the Rows/Columns legend reads our layers and pruning recipe, which such a record does not hold
        notes.append(f"declared with evaluate --grid-cell ({which}): row and column are the k/N and "
                     "weight sparsity the evaluation declared (model.grid_cell), not read from our kWTA layers or a "
                     "pruning recipe; the probe's k and the weights' zeros are checked against them (else marked)")
    notes += settings_notes(list(zip(names, records)), "cells") + recipe_notes(list(zip(names, records)))
    if "cascade" in {r.mode for r in records}:
        notes.append("'+' (cascade mode): robust after that attack and every earlier attack of the suite at the "
                     "same epsilon; the worst case is the per-sample minimum over all attacks.")
    return notes


def method_text(pruning_method: str) -> str:
    """`` (magnitude)`` after a sparsity or an axis: the pruning method of a matrix or cell (nothing for dense)."""
    return "" if pruning_method == DENSE else f" ({pruning_method})"


def _warning_notes(m: RobustnessMatrix, of_cell: dict[str, str], of_point: dict[str, str]) -> list[str]:
    """A line per marked cell of ``m``: why its numbers (``of_cell``: all of them; ``of_point``: this matrix's) are
    not comparable with the other cells'."""
    method = method_text(m.pruning_method)
    notes = []
    for (r, s) in describe_cells(m):
        name = cell_name(r, s)
        where = f"{name}{method if s else ''} {m.labels.get((r, s))}"
        if name in of_cell:
            notes.append(f"warning: {MARK} = not comparable with the other cells: {where}: {of_cell[name]}")
        if name in of_point:
            notes.append(f"warning: {MARK} in the worst case at {m.point_text}: {where}: {of_point[name]}")
    return notes


# ---------------------------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------------------------
def _measured_note(m: RobustnessMatrix) -> str:
    parts = []
    for s in m.sparsities:
        values = [v for (_, s2), v in m.measured.items() if s2 == s and v is not None]
        if not values:
            continue
        lo, hi = percent_text(min(values)), percent_text(max(values))
        parts.append(f"{s:g}: {lo}%" if lo == hi else f"{s:g}: {lo}–{hi}%")
    if not parts:
        return ""
    method = method_text(m.pruning_method)
    return f"measured weight sparsity{method} of all conv/linear weights, per column: " + ", ".join(parts)


def legend(matrices: Sequence[RobustnessMatrix]) -> list[str]:
    """What every matrix of ``matrices`` shares: axes, cells, measured sparsity per method, common notes."""
    notes = [
        "Rows: kWTA activation sparsity k/N (the fraction of units each top-k gate is set to keep; ties at the "
        "k-th largest go by the gate's own rule: our kWTA layers keep every tied unit, so on inputs with flat "
        "regions they keep a few more, a gate of your own keeps what its code keeps, e.g. exactly k by topk, every "
        "tied unit by a >= threshold); 1.0 = the ReLU "
        "twin (same architecture with ReLU activations). Columns: target weight sparsity (fraction of the pruned "
        "layers' weights set to zero, the layers each record lists in training.pruning.pruned_layers; 0 = dense).",
        "Cells: accuracy in % with its 95% Wilson interval; — = no record for that cell.",
    ]
    seen: set[str] = set()
    for m in matrices:
        if m.pruning_method not in seen:
            seen.add(m.pruning_method)
            measured = _measured_note(m)
            if measured:
                notes.append(measured)
    for m in matrices:
        notes += [n for n in m.notes + _sample_counts_note(m) if n not in notes]
    return notes


def _sample_counts_note(m: RobustnessMatrix) -> list[str]:
    """Where the cells were evaluated on different numbers of samples, each cell's ``n`` (the title gives a range)."""
    if m.n is not None or not m.cells:
        return []
    counts = ", ".join(f"k/N {ratio_text(r)} × {sparsity_text(s)}: {m.cells[(r, s)].n}"
                       for r in m.ratios for s in m.sparsities if (r, s) in m.cells)
    return [f"samples per cell (n differs between cells): {counts}"]


def matrix_table(m: RobustnessMatrix, with_legend: bool = True) -> Table:
    """The matrix as a :class:`~kwta_robust.report.Table`: a row per ``k/N``, a column per weight sparsity
    (with the :func:`legend` as notes unless ``with_legend`` is False)."""
    headers = ["k/N \\ weight sparsity", *(sparsity_text(s) for s in m.sparsities)]
    value = score_cell if m.noise else Cell.acc
    rows = [[Cell(ratio_text(r)), *(value(m.get(r, s), mark=cell_mark(  # type: ignore
        m.get(r, s) is not None and is_flagged(m.flags, m.upper_bounds, (r, s)), (r, s) in m.warnings))
        for s in m.sparsities)] for r in m.ratios]
    return Table(headers, rows, legend([m]) if with_legend else [], m.title)


LONG_HEADERS = ["metric", "norm", "eps", "eps_text", "cumulative", "pruning_method", "kwta_ratio", "activation",
                "weight_sparsity", "measured_weight_sparsity", "n", "correct", "accuracy", "critical_flags", "record",
                "warnings", "correct_unit"]


def long_table(matrices: Sequence[RobustnessMatrix]) -> Table:
    """One row per (matrix, cell with a value): every coordinate and number in its own column."""
    rows, flagged = [], []
    for m in matrices:
        for r in m.ratios:
            for s in [s for s in m.sparsities if m.get(r, s) is not None]:  # a cell with a value
                acc, measured, noise = m.get(r, s), m.measured.get((r, s)), isinstance(m.get(r, s), NoiseScore)
                rows.append([  # counts as counts: a noise level's correct answers (averaged over draws) too
                    Cell(m.metric), Cell(m.norm), Cell(m.eps), Cell(m.eps_text), Cell(m.cumulative),
                    Cell(m.pruning_method), Cell(r), Cell("relu" if r == RELU_RATIO else "kwta"), Cell(s),
                    Cell(measured), Cell(acc.n), score_cell(acc) if noise else Cell(acc.correct, count=True),
                    percent_cell(acc) if noise else Cell.acc(acc),
                    Cell(" ".join(m.flags.get((r, s), []))), Cell(m.labels.get((r, s))),
                    Cell("; ".join(m.warnings.get((r, s), []))), Cell(correct_unit(acc))])
                flagged.append(m.flags.get((r, s), []) + m.upper_bounds.get((r, s), []))
    notes = ["kwta_ratio 1.0 = the ReLU twin; accuracy columns in % with 95% interval bounds (Wilson; a noise score's: "
             "its t interval, per image and level, and in the correct column's bounds on its own scale); "
             "weight sparsities are fractions; warnings: why a cell is not comparable with the others; correct_unit: "
             "what correct counts, of n images (a noise level's: averaged over its draws; a noise score's: correct "
             "answers summed over its levels, averaged over its draws: not images)."
             + (f" flags: the codes that mark the cell {FLAG_MARK} (critical, then upper-bound warnings)."
                if any(flagged) else ""), *legend(matrices)]
    return with_flags_column(Table(list(LONG_HEADERS), rows, notes, "robustness matrices (long form)"), flagged)


def matrices_by_point(
        matrices: Sequence[RobustnessMatrix]) -> dict[tuple[str, str | None, str], list[RobustnessMatrix]]:
    """Group matrices of one metric, norm and pruning method, ordered by eps (for robust-accuracy-vs-eps plots)."""
    groups: dict[tuple[str, str | None, str], list[RobustnessMatrix]] = {}
    for m in matrices:
        if m.metric == CLEAN or m.noise or m.noise_level:
            continue
        groups.setdefault((m.metric, m.norm, m.pruning_method), []).append(m)
    return {k: sorted(v, key=lambda m: m.eps if m.eps is not None else -1.0) for k, v in groups.items()}


def clean_matrix(matrices: Sequence[RobustnessMatrix], pruning_method: str) -> RobustnessMatrix | None:
    """The clean-accuracy matrix of ``pruning_method`` among ``matrices`` (``None`` if absent)."""
    return next((m for m in matrices if m.metric == CLEAN and m.pruning_method == pruning_method), None)


def describe_cells(m: RobustnessMatrix) -> list[tuple[float, float]]:
    """Cells of ``m`` in row-major order (rows as displayed, columns increasing)."""
    return [(r, s) for r in m.ratios for s in m.sparsities]


def as_grid(m: RobustnessMatrix) -> list[list[Any]]:
    """Accuracies as a ``[rows][columns]`` list of floats (NaN where no record)."""
    return [[(m.get(r, s).accuracy if m.get(r, s) is not None else math.nan) for s in m.sparsities] for r in m.ratios]
