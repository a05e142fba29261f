"""Which cells of a robustness matrix are not comparable with the others (:mod:`kwta_robust.matrix` marks them).

A matrix puts the records of its cells side by side, so each number must come from the same measurement:

* :func:`config_differences`: a cell evaluated with another evaluation config than most cells (other attacks,
  budgets, seeds, threat points or data) — the matrices used to say only that *some* cells differed;
* :func:`worst_case_differences`: at one threat point, a cell whose worst case is over other attacks (a PGD-only
  record beside full-suite ones, with the same config hash; a ``compare`` record's transfer attacks are left out
  before, :mod:`kwta_robust.matrix_transfer`) — its worst case is not the same minimum, and nothing said so;
* :func:`grid_cell_conflict`: a declared ``--grid-cell`` weight sparsity that the evaluated tensors contradict
  (the record placed in a column whose sparsity its weights do not have);
* :func:`grid_ratio_conflict`: a declared ``--grid-cell`` k/N that the layer probe's top-k gates contradict (the
  record placed in a row whose kWTA ratio its gates do not have; gates built inline in a module's ``forward`` count
  too), or the ReLU twin's row (1.0) declared for a model with winner-take-all gates built from a max-pool (kind
  ``max-pool-gate``, attacks/pool_gates.py);
* :func:`family_differences`: a dense cell (the column every pruning method's matrix shares) holding another model
  family than the matrix's pruned cells: a model of one's own declared with ``--grid-cell`` beside cells that
  kwta-robust trained, or the reverse — its row read as the same models before pruning, with nothing said.

Each returns, per cell name, one sentence saying what differs; the matrices mark those cells and list the sentences.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Hashable, Mapping, TypeVar

from kwta_robust.comparability import data_set_key, data_set_text
from kwta_robust.config_digest import identity_hash, without_location
from kwta_robust.detect import POOL_GATE
from kwta_robust.diagnostics_base import detected_layers, exceeds
from kwta_robust.errors import ConfigError, is_finite_number
from kwta_robust.fresh_record import DETECTED_RELU
from kwta_robust.grid_cell import DECLARED_METHOD, DENSE
from kwta_robust.layer_text import (K_TOLERANCE, common_ratio, expected_k, fits_every_gate, gate_pairs,
                                    inline_gate_layers, k_per_shape, probe_ratio)
from kwta_robust.numbers import percent_text
from kwta_robust.record_index import RecordIndex
from kwta_robust.record_values import shown_text
from kwta_robust.results import EvalRecord

#: How far (absolute fraction of weights) a declared grid-cell weight sparsity may be from the measured one.
SPARSITY_TOLERANCE = 0.05
#: Diagnostics code of the record flag for a contradicted ``--grid-cell`` declaration.
GRID_CELL_FLAG = "grid-cell-sparsity"
#: Diagnostics code of the record flag for a declared ``--grid-cell`` k/N that the layer probe contradicts.
GRID_RATIO_FLAG = "grid-cell-ratio"

V = TypeVar("V", bound=Hashable)


def _reference(values: Mapping[str, V]) -> V:
    """The value most cells share (ties: the first cell's, in the order given)."""
    counts = Counter(values.values())
    best = max(counts.values())
    return next(v for v in values.values() if counts[v] == best)


def config_differences(records: Mapping[str, EvalRecord]) -> dict[str, str]:
    """Cells (by name) whose evaluation config or data set differs from the one most cells share: what differs."""
    keys = {name: (identity_hash(rec.config, rec.config_hash), *data_set_key(rec)) for name, rec in records.items()}
    if len(set(keys.values())) < 2:
        return {}
    ref_key = _reference(keys)
    ref = next(records[name] for name, key in keys.items() if key == ref_key)
    out = {}
    for name, rec in records.items():
        if keys[name] == ref_key:
            continue
        mine, theirs = without_location(rec.config), without_location(ref.config)  # where data sat is no difference
        fields = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if data_set_key(rec) != data_set_key(ref):
            fields.insert(0, f"data set {data_set_text(rec)} {rec.dataset.get('split')}")
        out[name] = ("evaluated with another evaluation config than the other cells (differs in: "
                     f"{', '.join(fields) or 'config hash'})")
    return out


def worst_case_differences(records: Mapping[str, EvalRecord | RecordIndex], norm: str,
                           eps: float) -> dict[str, str]:
    """Cells (by name) whose worst case at ``(norm, eps)`` is over other attacks than most cells': which (the
    matrices pass each record's :class:`~kwta_robust.record_index.RecordIndex`: called per threat point)."""
    suites: dict[str, tuple[str, ...]] = {}
    for name, rec in records.items():
        worst = rec.worst(norm, eps)
        if worst is not None:
            suites[name] = tuple(worst.attacks)
    if len(set(suites.values())) < 2:
        return {}
    ref = _reference(suites)
    return {name: f"worst case over {', '.join(s) or 'no attack'}; the other cells' over {', '.join(ref)}"
            for name, s in suites.items() if s != ref}


def cell_range_problem(ratio: float, sparsity: float) -> str | None:
    """What puts a declared cell (``model.sweep_cell`` or ``grid_cell``, e.g. edited by hand) outside the grid's
    ranges: k/N in (0, 1], weight sparsity in [0, 1) (NaN is outside both), else ``None``."""
    if not 0.0 < ratio <= 1.0:
        return f"kwta_ratio {ratio:g} is outside (0, 1]"
    if not 0.0 <= sparsity < 1.0:
        return f"weight_sparsity {sparsity:g} is outside [0, 1)"
    return None


def leave_out_of(command: str) -> str:
    """Where ``command``'s user leaves out a record that has no matrix row: the records given to ``--matrix``
    (``table --matrix``, ``report --matrix``) or the sweep's folder (``report --sweep`` and ``sweep``, whose records
    they find)."""
    if command == "sweep":
        return "the sweep's folder"
    return "the sweep's folder (or pass the other records to report --matrix)" if "--sweep" in command \
        else "--matrix"


def check_pruning(label: str, pruning: Mapping, command: str = "table --matrix") -> None:
    """``ConfigError`` (naming ``command``, the one placing records) unless a record's ``model.training.pruning``
    (target_sparsity, method) names a grid column (a hand-edited 2 or -0.5 was a column of its own, a missing
    method the column ``None``)."""
    target, method = pruning.get("target_sparsity"), pruning.get("method")
    where = f"{command}: record {shown_text(label, quoted=True)}: model.training.pruning"
    if not is_finite_number(target) or not 0.0 <= target < 1.0:
        raise ConfigError(f"{where}.target_sparsity {target!r} is not a fraction in [0, 1); give the fraction of "
                          "weights pruned")
    if not isinstance(method, str) or not method:
        raise ConfigError(f"{where}.method is {method!r}, not a pruning method's name; name it (e.g. 'magnitude')")


def grid_cell_conflict(model: Mapping) -> str | None:
    """What contradicts the declared ``model["grid_cell"]`` weight sparsity in the measured
    ``model["weight_sparsity"]`` (``overall`` and per-layer fractions of exact zeros), or ``None``.

    The declared sparsity is that of the pruned layers, which need not be every layer: it is contradicted when more
    of all weights are zero than declared, or when no layer is nearly as sparse as declared (both beyond
    :data:`SPARSITY_TOLERANCE`; a difference of exactly the tolerance is within it)."""
    cell, measured = model.get("grid_cell"), model.get("weight_sparsity")
    if not isinstance(cell, Mapping) or not isinstance(measured, Mapping):
        return None
    overall = measured.get("overall")
    declared = cell.get("weight_sparsity")
    if not isinstance(overall, (int, float)) or not isinstance(declared, (int, float)):
        return None
    layers = [v for v in (measured.get("layers") or {}).values() if isinstance(v, (int, float))]
    sparsest = max(layers) if layers else overall
    if exceeds(overall - declared, SPARSITY_TOLERANCE):
        found = f"{percent_text(overall)}% of all conv/linear weights are zero"
    elif exceeds(declared - sparsest, SPARSITY_TOLERANCE):
        found = f"its sparsest layer has {percent_text(sparsest)}% zero weights"
    else:
        return None
    return (f"declared --grid-cell weight_sparsity={declared:g} but {found} in the evaluated tensors; declare the "
            f"cell again with the weight sparsity the model has (nothing is evaluated again)")


def gate_ratios(record: EvalRecord) -> list[str]:
    """``name k/N`` of each top-k gate the record's layer probe found (what a model that is not ours shows; the
    evidence of a ``grid-cell-ratio`` flag, kept in this form in the records): the module gates, then the gates built
    inline in a module's ``forward`` (:func:`~kwta_robust.layer_text.inline_gate_layers`: ``NAME (inline) k/N``,
    ``NAME (inline) 4/16, 4/64`` where its gates showed several, or ``NAME (inline)`` alone in a record whose
    selections did not hold k). :func:`gates_found_text` words them."""
    return [f"{name} {_ratios_text(pairs)}" if pairs else name for name, pairs in _gate_counts(record)]


def gates_found_text(record: EvalRecord) -> str:
    """The top-k gates of :func:`gate_ratios` for a sentence: ``layer 4 (k/N 20/200)``, ``layers 4 (k/N 20/200),
    7 (k/N 10/100)`` (the first four, then ``...``); an inline gate whose gates showed several k/N ``block (inline)
    (k/N 4/16, 4/64)``; a gate built inline whose k the record does not hold is ``NAME (inline) (k not recorded)``;
    empty without gates. A layer's name is the module's path, ``4`` in a ``Sequential``, which alone (``4 20/200``)
    read as bare numbers."""
    return _layers([f"{name} (k/N {_ratios_text(pairs)})" if pairs else f"{name} (k not recorded)"
                    for name, pairs in _gate_counts(record)])


def _ratios_text(pairs: list[tuple[Any, Any]]) -> str:
    """``20/200``, or ``4/16, 4/64`` for a gate of several k/N."""
    return ", ".join(f"{k}/{n}" for k, n in pairs)


def _gate_counts(record: EvalRecord) -> list[tuple[str, list[tuple[Any, Any]]]]:
    """``(name, [(k, N), ...])`` of each gate of :func:`gate_ratios`: each k/N a module gate showed at its input
    shapes (a gate shared by layers of other widths; its first shape's alone had stood for all) and each k/N an
    inline gate's gates showed (:func:`~kwta_robust.layer_text.k_per_shape` of their evidence, each pair once);
    none where not recorded."""
    evidence = [(layer["name"], layer.get("evidence") or {}) for layer in detected_layers(record, "gate")]
    found = [(name, list(dict.fromkeys((k, n) for _, k, n in k_per_shape(e)))) for name, e in evidence
             if {"k", "group_size"} <= set(e)]
    return found + [(g["name"], [(k, n) for _, k, n in k_per_shape(g["evidence"])] if g["evidence"] else [])
                    for g in inline_gate_layers(record)]


def declarable_ratio(record: EvalRecord) -> float | None:
    """The k/N to declare (``--grid-cell kwta_ratio``) for a record of your own model: the k/N its tables print
    (:func:`~kwta_robust.layer_text.probe_ratio`, the largest gate's), written with the fewest significant digits
    (1 to 3) at which every gate's measured k is within :data:`K_TOLERANCE` unit of the k that ratio gives
    (:func:`expected_k`, the rule a declaration is checked by); the printed k/N where none is; ``None`` where the
    gates show no one k/N. A top-k of your own set to 0.1 keeps ``round(0.1 · 144) = 14`` of a 12 × 12 channel:
    0.0972 was suggested, a row beside the 0.1 its sibling records declare. Never 1.0, the ReLU twin's row."""
    ratio = probe_ratio(record)
    if ratio is None:
        return None
    pairs = gate_pairs(record)
    for digits in (1, 2, 3):
        short = float(f"{ratio:.{digits}g}")
        if 0.0 < short < 1.0 and fits_every_gate(short, pairs, record.model):
            return short
    return ratio


def grid_cell_to_declare(record: EvalRecord) -> str:
    """The ``--grid-cell`` a record of a model of your own with top-k gates is told to declare: the row of
    :func:`declarable_ratio` with why, or ``kwta_ratio=R`` where the gates show no one k/N."""
    ratio, printed = declarable_ratio(record), probe_ratio(record)
    if ratio is None or printed is None:
        return "--grid-cell kwta_ratio=R,weight_sparsity=S"
    why = (f"k/N {ratio:.3g}: every gate's" if f"{ratio:.3g}" == f"{printed:.3g}" else
           f"k/N {ratio:.3g}: every gate keeps {ratio:.3g} · its size, within one unit; the tables print "
           f"{printed:.3g}, the largest gate's k/N")
    return f"--grid-cell kwta_ratio={ratio:.3g},weight_sparsity=S ({why}; S: the weights' pruned fraction, 0 if dense)"


def grid_ratio_conflict(record: EvalRecord) -> str | None:
    """What contradicts the declared ``model["grid_cell"]`` k/N in the layer probe's top-k gates, or ``None``.

    The gates are the module gates and those built inline in a module's ``forward``
    (:func:`~kwta_robust.layer_text.inline_gate_layers`, k/N where their selections recorded it: each k/N an inline
    gate showed, a block called on two widths, so that its first gate's k/N does not stand for all). Only an
    unambiguous measurement counts: every gate (at every input shape) shows one k/N (:func:`common_ratio`),
    the ratio the tables print for the model. It contradicts the declaration when at no gate the measured
    k is within :data:`K_TOLERANCE` unit of the k the declared ratio gives by the package's rule
    (:func:`expected_k`): implementations round ``ratio · N`` down (ours), truncate (Xiao et al.'s ``int``, one
    fewer just below an integer) or round up, and those differ by one unit, not more. A ReLU row (1.0) is
    contradicted by any gate (gates of several k/N too, each named), a max-pool winner-take-all gate or a gate built
    inline whose k the record does not hold too (they have no k/N to measure: other rows are not judged by them); a
    model whose gates the probe did not find is not judged."""
    cell = record.model.get("grid_cell")
    declared = cell.get("kwta_ratio") if isinstance(cell, Mapping) else None
    if not is_finite_number(declared) or not 0.0 < declared <= 1.0:
        return None
    inline = inline_gate_layers(record)
    gates = detected_layers(record, "gate") + inline
    pairs = gate_pairs(record)
    one = common_ratio(pairs) is not None
    several = not one and declared == 1.0 and any(k < n for k, n in pairs)  # gates of several k/N: none is ReLU
    if not several and (not one or any(abs(expected_k(declared, n, record.model) - k) <= K_TOLERANCE
                                       for k, n in pairs)):
        if declared != 1.0:
            return None
        return _pool_twin_conflict(pool_gate_names(record), [g["name"] for g in inline if not g["evidence"]])
    measured = ", ".join(f"{k}/{n} ({k / n:.3g})" for k, n in (dict.fromkeys(pairs) if several else pairs[:1]))
    row = " (the ReLU twin)" if declared == 1.0 else ""
    names = _layers([str(g.get("name")) for g in gates])
    return (f"declared --grid-cell kwta_ratio={declared:g}{row} but the layer probe measured k/N {measured} "
            f"at its top-k gates in {names}; declare the cell again with the ratio the model has "
            f"(nothing is evaluated again){_cell_to_declare(record, cell, pairs) if one else ''}")


def _cell_to_declare(record: EvalRecord, cell: Mapping[str, Any], pairs: list[tuple[int, int]]) -> str:
    """``": --grid-cell kwta_ratio=0.1,weight_sparsity=0"``: the declared ``cell`` with the k/N of
    :func:`declarable_ratio` (the weights' sparsity and pruning method as declared), which the gates' ``pairs``
    (k, N) do not contradict; empty where no such ratio below 1 is found."""
    ratio = declarable_ratio(record)
    if ratio is None or not 0.0 < ratio < 1.0 or not any(
            abs(expected_k(ratio, n, record.model) - k) <= K_TOLERANCE for k, n in pairs):
        return ""
    sparsity = cell.get("weight_sparsity")
    method = cell.get("pruning_method")
    named = f",pruning_method={method}" if isinstance(method, str) and method not in (DENSE, DECLARED_METHOD) else ""
    return (f": --grid-cell kwta_ratio={ratio:.3g},weight_sparsity="
            f"{format(sparsity, 'g') if is_finite_number(sparsity) else 'S'}{named}")


def pool_gate_names(record: EvalRecord) -> list[str]:
    """The layers the record's layer probe read as max-pool winner-take-all gates (kind ``max-pool-gate``; the
    evidence of a ``grid-cell-ratio`` flag beside :func:`gate_ratios`)."""
    return [str(layer.get("name")) for layer in detected_layers(record, POOL_GATE)]


def _pool_twin_conflict(pools: list[str], inline: list[str] | None = None) -> str | None:
    """The ReLU twin's row declared for a model whose layer probe found the max-pool winner-take-all gates
    ``pools`` or the gates built inline ``inline`` whose k the record does not hold (it was placed there unmarked:
    no measured k/N contradicted it), or ``None`` without such gates."""
    found = ([f"winner-take-all gates built from a max-pool in {_layers(pools)}"] if pools else []) + (
        [f"top-k gates built inline in {_layers(inline)}, their k not recorded"] if inline else [])
    if not found:
        return None
    return (f"declared --grid-cell kwta_ratio=1 (the ReLU twin) but the layer probe found {' and '.join(found)}; "
            "declare the cell again with the ratio the model has (nothing is evaluated again)")


def _layers(names: list[str]) -> str:
    """``layer NAME`` or ``layers A, B, ...`` (the first four): a module's name, ``4`` in a ``Sequential``, is not
    read as a count then; empty for none."""
    if not names:
        return ""
    return ("layer " if len(names) == 1 else "layers ") + ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def grid_cell_problems(record: EvalRecord) -> str | None:
    """The declared grid cell's contradictions (:func:`grid_cell_conflict`, :func:`grid_ratio_conflict`) as one
    sentence for a matrix's marked cell, or ``None``."""
    found = [c for c in (grid_ratio_conflict(record), grid_cell_conflict(record.model)) if c is not None]
    return "; ".join(found) or None


def _declared(record: EvalRecord) -> bool:
    """Whether ``record`` is placed by a ``--grid-cell`` declaration (a model of one's own), not by a sweep cell or
    what kwta-robust's training recorded."""
    return bool(record.model.get("grid_cell")) and not record.model.get("sweep_cell")


def _pruned_family(record: EvalRecord) -> bool | None:
    """:func:`_declared` of a pruned cell's record; ``None`` for one declared with a registered method
    (``pruning_method=magnitude``): its declaration puts it beside our models of that method on purpose."""
    if not _declared(record):
        return False
    return True if record.model["grid_cell"].get("pruning_method") == DECLARED_METHOD else None


def family_differences(records: Mapping[str, EvalRecord], dense: set[str]) -> dict[str, str]:
    """Per dense cell name (in ``dense``; ``records`` by cell name): a sentence where the matrix's pruned cells are
    all models declared with ``--grid-cell`` (with no pruning method: the ``declared`` matrix) and this one is not,
    or the matrix's pruned cells are all ours and this one is declared. The dense column is shared by every
    pruning method's matrix, so a records' set of both families put the other family's dense models beside the
    pruned ones, read as the same models before pruning."""
    pruned = {_pruned_family(record) for name, record in records.items() if name not in dense}
    if len(pruned) != 1 or None in pruned:  # no pruned cell, both families, or one placed in our method's matrix
        return {}
    own = pruned.pop()
    kinds = {True: "a model of your own declared with evaluate --grid-cell",
             False: "a model kwta-robust trained (placed by its sweep cell or checkpoint)"}
    return {name: (f"{kinds[not own]}, beside pruned cells that are each {kinds[own]}: another model family "
                   "(architecture, training), shown in the dense column every pruning method's matrix shares; render "
                   "each family with a table --matrix of its own")
            for name, record in records.items() if name in dense and _declared(record) != own}


def family_hint(first: EvalRecord, second: EvalRecord) -> str:
    """Why two records on one cell may be two model families (for the error refusing them): cells of two sweeps, or
    a model declared with ``--grid-cell`` beside one kwta-robust trained; ``""`` otherwise."""
    sweeps = [str((r.model.get("sweep_cell") or {}).get("sweep", "")) for r in (first, second)]
    if all(sweeps) and sweeps[0] != sweeps[1]:
        return (f" (cells of sweeps {shown_text(sweeps[0], quoted=True)} and {shown_text(sweeps[1], quoted=True)}: "
                "render each sweep's records with a table --matrix of its own)")
    ids = [str((r.model.get("sweep_cell") or {}).get("cell_id", "")) for r in (first, second)]
    if all(sweeps) and all(ids) and ids[0] != ids[1]:
        return (f" (two cells of sweep {shown_text(sweeps[0], quoted=True)} trained with other recipes: the sweep's "
                "folder keeps both; its matrices.* and report --sweep FOLDER hold the cells its sweep.json lists)")
    if _declared(first) != _declared(second):
        return (" (one a model of your own declared with evaluate --grid-cell, the other one kwta-robust trained: "
                "render each model family with a table --matrix of its own)")
    return ""


def cell_problems(records: Mapping[str, EvalRecord], dense: set[str]) -> dict[str, str]:
    """Per cell name (``records`` by cell name; ``dense``: the dense cells' names) the sentences of
    :func:`config_differences`, :func:`family_differences` and :func:`grid_cell_problems` that concern it, joined."""
    found = [config_differences(records), family_differences(records, dense)]
    problems = {}
    for name, record in records.items():
        text = "; ".join(filter(None, [f.get(name) for f in found] + [grid_cell_problems(record)]))
        if text:
            problems[name] = text
    return problems


def own_cell(model: Mapping, relu_ratio: float, dense: str, label: str | None = None,
             command: str = "table --matrix") -> tuple[float, float | None, str | None] | None:
    """The grid cell a package model's record states by itself, ``(kwta_ratio, weight_sparsity, pruning_method)``:
    k/N from ``activation``/``kwta_ratio`` (``relu_ratio`` for ReLU) and, where the record holds its ``training``
    section, sparsity and method from ``training.pruning`` (``0.0`` and ``dense`` at none; both ``None`` without the
    section); ``None`` when its fields state no k/N (another model's record). The one reading of a record's own cell:
    :func:`check_sweep_cell` compares a sweep cell with it and :func:`kwta_robust.matrix.cell_coordinates` places a
    record that declares no cell by it. Given the record's ``label`` (placing it), a stated pruning that names no
    grid column is a :class:`ConfigError` naming ``command`` (:func:`check_pruning`)."""
    activation, ratio = model.get("activation"), model.get("kwta_ratio")
    if activation in ("relu", DETECTED_RELU):  # nn.ReLU modules, or ReLUs only the layer probe saw applied
        ratio = relu_ratio
    elif activation != "kwta" or not is_finite_number(ratio):
        return None
    training = model.get("training")
    if not isinstance(training, Mapping):
        return float(ratio), None, None
    pruning = training.get("pruning")
    if not isinstance(pruning, Mapping) or not pruning.get("target_sparsity"):
        return float(ratio), 0.0, dense
    if label is not None:
        check_pruning(label, pruning, command)
    target = pruning.get("target_sparsity")
    return float(ratio), float(target) if is_finite_number(target) else None, str(pruning.get("method"))


def check_sweep_cell(label: str, model: Mapping, relu_ratio: float, dense: str,
                     command: str = "table --matrix") -> None:
    """``ConfigError`` (naming ``command``) when a record's ``model.sweep_cell`` names another cell than its own
    model states (:func:`own_cell`): a cell record edited by hand, or copied from another cell, sat silently in the
    wrong row or column of every matrix."""
    cell = model.get("sweep_cell")
    own = own_cell(model, relu_ratio, dense) if isinstance(cell, Mapping) else None
    if own is None:
        return
    declared = (float(cell["kwta_ratio"]), float(cell["weight_sparsity"]), str(cell["pruning_method"]))
    same = [own[i] is None or math.isclose(declared[i], own[i], rel_tol=1e-9) for i in (0, 1)]
    if all(same) and own[2] in (None, declared[2]):
        return
    stated = f"kwta_ratio={own[0]:g} (activation {model.get('activation')})" + (
        "" if own[1] is None else f", weight_sparsity={own[1]:g} ({own[2]})")
    raise ConfigError(f"{command}: record {shown_text(label, quoted=True)}: model.sweep_cell puts it at "
                      f"kwta_ratio={declared[0]:g}, weight_sparsity={declared[1]:g} ({declared[2]}) but its model has "
                      f"{stated}; the record was edited or copied from another cell: pass the record the sweep wrote "
                      "for that cell")
