"""Tables built from evaluation records only, as data (:class:`Table` of :class:`Cell`); the formats that render
them (Markdown, CSV, LaTeX, JSON, ...) are the modules of :mod:`kwta_robust.formats`.

Two layouts:

* :func:`compare_table` (*wide*): one row per record — clean accuracy, robust accuracy per attack and epsilon,
  the per-sample worst case per epsilon, the Numenta noise score (with its 95% t interval over the samples where the
  record holds per-sample counts and n >= 30: :mod:`kwta_robust.noise_ci`) and the diagnostics flags. Used by
  ``compare``, ``quickstart`` and ``table``.
* :func:`detail_table` (*long*): one row per (threat, attack) of one record, plus the worst case, with wall time,
  queries and projected violations. Used by ``evaluate``.

Accuracies are percentages with the record's 95 % confidence interval (Wilson score, see
:mod:`kwta_robust.results`) and epsilons are written as the field writes them (``8/255``, ``0.3``). In cascade mode
an attack column after the first is *cumulative* (robust after that attack and every earlier one) and its header
starts with ``+``. Markdown and LaTeX list each flag's evidence below the table; CSV and JSON give every accuracy
and interval bound as a number (percent) in its own column, and a noise score's bounds as numbers on its own scale
(12 significant digits, a percentage of counts from the counts: :func:`~kwta_robust.formats.base.flat_columns`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from attacks.base import NORM_TITLES
from kwta_robust.comparability import comparability_notes
from kwta_robust.errors import ConfigError, is_finite_number
from kwta_robust.fresh_record import is_ran_name
from kwta_robust.layer_text import detected_gates_text, layer_notes
from kwta_robust.noise_ci import interval_text, record_score_interval
from kwta_robust.noise_notes import noise_score_notes, other_noise_notes, probe_notes
from kwta_robust.numbers import interval_percent_texts, number_text, percent_text
from kwta_robust.randomness import expected_robust_accuracy, record_draws
from kwta_robust.record_index import RecordIndex, indexed
from kwta_robust.results import Z95, Accuracy, AttackResult, EvalRecord, WorstCase
from kwta_robust.suite_order import suite_order
from kwta_robust.training_text import any_adversarially_trained, beyond_training_notes, training_text

NORM_TEXT = NORM_TITLES


@dataclass
class Cell:
    """A table cell: an accuracy (fraction, with interval), a number (a noise score: with its interval, on its
    scale, where it has one) or text."""

    value: Any
    ci: tuple[float, float] | None = None
    percent: bool = False
    mark: str = ""  # after the text of a value (a matrix cell not comparable with the others); not in CSV/JSON
    #: A % cell's ``(correct, n)`` where its value is ``correct / n``: CSV and JSON compute the percentage from them
    #: (:func:`~kwta_robust.numbers.percent_of`: 22 of 40 is 55.0, not 55.00000000000001).
    counts: tuple[int, int] | None = None
    #: A number computed in floating point that is no % and has no interval column (a noise score without one, a
    #: p-value): CSV and JSON give it to :data:`~kwta_robust.numbers.TABLE_DIGITS` significant digits, as they give
    #: every % and interval bound (:func:`~kwta_robust.formats.base.flat_columns`).
    computed: bool = False
    #: A count, or a count averaged over draws (a noise score, a noise level's correct answers): CSV and JSON write
    #: it as an integer where it is whole (``6``, not ``6.0``; ``9.5`` stays), as they write every other count.
    count: bool = False

    @classmethod
    def acc(cls, acc: Accuracy | None, mark: str = "") -> "Cell":
        if acc is None:
            return cls(None, None, True, mark)
        return cls(acc.accuracy, (acc.ci_low, acc.ci_high), True, mark, _counts(acc))

    def percent_bounds(self) -> tuple[str, str]:
        """A % cell's interval bounds as every format writes them: rounded outward, the lower down and the upper up
        (:func:`~kwta_robust.numbers.interval_percent_texts`: never narrower than computed), whether an accuracy's
        Wilson bounds, an expected accuracy's or a noise level's."""
        low, high = self.ci or (math.nan, math.nan)
        return interval_percent_texts(low, high)


def _counts(acc: Accuracy) -> tuple[int, int] | None:
    """``(correct, n)`` of an accuracy that is ``correct / n`` (a record's); ``None`` for one that is not a ratio of
    two counts (a noise level's: correct answers averaged over draws)."""
    correct, n = acc.correct, acc.n
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in (correct, n))
    return (correct, n) if whole and n > 0 and correct / n == acc.accuracy else None


@dataclass
class Table:
    """Headers, rows of cells, and notes (flag evidence, legends) shown below the table."""

    headers: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    title: str = ""
    key_columns: int = 1  # leading columns that name a row: repeated in every block of a table split for width
    wrap_columns: tuple[int, ...] = ()  # columns of ', '-lists (flag codes): wrapped, not cut, in a terminal's width


def cell_text(cell: Cell) -> str:
    """Human text: ``87.5 (82.3–91.2)`` for accuracies, ``—`` for missing values."""
    if cell.value is None or (isinstance(cell.value, float) and math.isnan(cell.value)):
        return "—" + cell.mark  # a matrix cell whose record was lost (kwta_robust.sweep_lost)
    if cell.percent:
        text = percent_text(cell.value)
        if cell.ci is not None and all(is_finite_number(c) for c in cell.ci):
            text += f" ({'–'.join(cell.percent_bounds())})"
        return text + cell.mark
    if isinstance(cell.value, float):  # a noise score: marked as an accuracy is, its interval after it if any
        text = number_text(cell.value)
        if cell.ci is not None and all(is_finite_number(c) for c in cell.ci):
            text += f" ({interval_text(*cell.ci)})"
        return text + cell.mark
    return str(cell.value) + cell.mark


def point_text(norm: str, eps_text: str) -> str:
    """``Linf 8/255``: a threat point as tables write it."""
    return f"{NORM_TEXT.get(norm, norm)} {eps_text}"


#: Appended to the model name of a record whose evaluation did not finish (``table --allow-partial``).
PARTIAL_MARK = " [partial]"
PARTIAL_NOTE = ("[partial] = unfinished evaluation: attacks or epsilons may be missing and the worst case covers only "
                "the attacks run so far; re-run its command to finish it.")


def record_name(record: EvalRecord) -> str:
    """The record's label, marked :data:`PARTIAL_MARK` unless its evaluation is complete."""
    return record.label + ("" if record.status == "complete" else PARTIAL_MARK)


def partial_notes(records: Sequence[EvalRecord]) -> list[str]:
    """:data:`PARTIAL_NOTE` when any of ``records`` is unfinished."""
    return [PARTIAL_NOTE] if any(r.status != "complete" for r in records) else []


def activation_text(record: EvalRecord) -> str:
    """``relu``, ``kwta 0.1 volume`` (ratio or k, and mode) or the recorded activation name; for a model of your own
    whose top-k gates the layer probe found, those (:func:`detected_gates_text`) instead of ``none``, after ``relu +``
    where it has ReLUs too (its ``activation_layers``, where the record says ``top-k (detected)``; not where the probe
    saw none of them run, ``relu_calls`` 0); ``relu (detected)`` for one whose ReLUs only the probe saw
    (:data:`~kwta_robust.fresh_record.DETECTED_RELU`), ``gelu (detected)`` / ``mixed (detected: gelu 12, relu 1)``
    for one named from the activations its forward ran (:func:`~kwta_robust.fresh_record.ran_name`); for a
    describer's ``mixed`` (kWTA layers and an ``nn.ReLU``) whose ReLUs the probe saw none of run, the kWTA layers
    and the other activations that ran (``kwta 0.25 dense``, ``kwta 0.25 dense + gelu (detected)``), not ``mixed``."""
    m = record.model
    if is_ran_name(m.get("activation")):  # no gate found, named from the activations a forward ran: not ``none``
        return str(m["activation"])
    act = str(m.get("activation_layers") or m.get("activation") or "?")
    gates = detected_gates_text(record)
    if gates:  # an nn.ReLU held and never called (Xiao et al.'s kWTA ResNet without use_relu): not "relu +"
        return gates if act in ("none", "?") or act == "relu" and m.get("relu_calls") == 0 else f"{act} + {gates}"
    others = m.get("other_activations")
    if act == "mixed" and m.get("relu_calls") == 0 and isinstance(others, Mapping):  # its nn.ReLU never ran
        return " + ".join([_kwta_text(m), *(f"{kind} (detected)" for kind in others)])
    return _kwta_text(m) if act == "kwta" else act


def _kwta_text(m: Mapping) -> str:
    """``kwta 0.1 volume``: the describer's kWTA ratio (or k) and mode of the model section ``m``."""
    size = (f"{m['kwta_ratio']:g}" if m.get("kwta_ratio") is not None
            else (f"k={m['kwta_k']}" if m.get("kwta_k") else ""))
    return " ".join(part for part in ("kwta", size, str(m.get("kwta_mode") or "")) if part)


def weight_sparsity_value(record: EvalRecord) -> float | None:
    """The record's overall weight sparsity as a number (``None`` if not recorded)."""
    ws = record.model.get("weight_sparsity")
    value = ws.get("overall") if isinstance(ws, dict) else ws
    return float(value) if isinstance(value, (int, float)) else None


def flag_codes(record: EvalRecord) -> str:
    """The record's flag codes once each, ``info`` ones in parentheses; ``none`` without flags."""
    codes: list[str] = []
    for f in record.diagnostics:
        code = f.code if f.severity != "info" else f"({f.code})"
        if code not in codes:
            codes.append(code)
    return ", ".join(codes) if codes else "none"


def _flag_notes(record: EvalRecord, prefix: str) -> list[str]:
    return [f"{prefix}{f.severity} {f.code}: {f.message}" for f in record.diagnostics]


def record_notes(records: Sequence[EvalRecord]) -> list[str]:
    """Per record: the transfer attacks' sources and every diagnostics flag with its evidence (prefixed with the
    record's label when there are several)."""
    notes: list[str] = []
    for rec in records:
        sources = sorted({(r.label, r.source) for r in rec.results if r.source is not None})
        if sources:
            crafted = ", ".join(f"{label} = crafted on {source}" for label, source in sources)
            notes.append(f"[{rec.label}] transfer attacks: {crafted}")
        notes += _flag_notes(rec, f"[{rec.label}] " if len(records) > 1 else "")
    return notes


def sanity_notes(records: Sequence[EvalRecord]) -> list[str]:
    """The sanity attack's result per record (Carlini et al. 2019: at an epsilon that reaches any image a working
    attack leaves ~0% robust; the ``large-eps-not-zero`` flag says when it does not), so a table that shows no flag
    also says the check ran."""
    runs: dict[tuple[str, str], list[str]] = {}
    for rec in records:
        for r in rec.sanity:
            # only a Linf ball of radius 1 holds every [0, 1] image; an L2 ball of radius 10 on 28x28 inputs does not
            why = "any image is within reach" if r.norm == "linf" and r.eps >= 1 else "an eps this large"
            key = (f"{r.label} at {point_text(r.norm, r.eps_text)}", why)
            runs.setdefault(key, []).append((f"{rec.label} " if len(records) > 1 else "")
                                            + f"{percent_text(r.robust.accuracy)}%")
    return [f"sanity check: {where} leaves {', '.join(values)} robust (must be about 0: {why})"
            for (where, why), values in runs.items()]


def _check_kills(record: EvalRecord) -> dict[tuple[str, float], tuple[WorstCase, list[str], set[int]]]:
    """Per threat point where the budget check's re-runs broke samples the suite's worst case left robust: that
    worst case, the re-runs (labels and factors) and those samples (positions among the record's samples; a settled
    check's first sample included)."""
    kills: dict[tuple[str, float], tuple[WorstCase, list[str], set[int]]] = {}
    index = RecordIndex(record)  # a worst case looked up per re-run flag (up to two a threat point), not scanned for
    for flag in record.diagnostics:
        evidence = flag.evidence
        if evidence.get("source") != "rerun" or not isinstance(evidence.get("broken_indices"), list):
            continue
        point = (str(evidence.get("norm")), float(evidence.get("eps", math.nan)))
        worst = index.worst(*point)
        if worst is None:
            continue
        broken = set(evidence["broken_indices"]) | set((evidence.get("first_sample") or {}).get("broken_indices", []))
        survivors = {i for i in broken if 0 <= i < len(worst.first_broken_by) and worst.first_broken_by[i] == -1}
        if survivors:
            _, runs, found = kills.setdefault(point, (worst, [], set()))
            runs.append(f"{evidence.get('attack')} at {evidence.get('factor')}x")
            found |= survivors
    return kills


def budget_check_notes(records: Sequence[EvalRecord]) -> list[str]:
    """Where the budget check's re-runs broke samples the suite left robust: the lowest robust accuracy the run
    verified. The worst case stays the configured suite's (its config reproduces it, :mod:`kwta_robust.budget_check`);
    these verified adversarial examples make the tighter upper bound, which a reader should not have to work out
    from the flags."""
    notes = []
    texts = point_texts(records)  # the columns' names
    for rec in records:
        prefix = f"[{rec.label}] " if len(records) > 1 else ""
        indices = rec.dataset.get("indices")
        for (norm, eps), (worst, runs, found) in _check_kills(rec).items():
            lowest = Accuracy.of(worst.robust.correct - len(found), worst.robust.n)
            plural = "s" if len(found) > 1 else ""
            ids = (f"; data set id{plural} {', '.join(str(indices[i]) for i in sorted(found))}"
                   if isinstance(indices, list) and len(indices) == len(worst.first_broken_by) else "")
            bounds = "–".join(interval_percent_texts(lowest.ci_low, lowest.ci_high))  # outward, as every interval
            notes.append(f"{prefix}budget check at {texts[(norm, eps)]}: its re-runs ({', '.join(runs)}) "
                         f"broke {len(found)} sample{plural} the suite left robust (at position{plural} "
                         f"{', '.join(map(str, sorted(found)))}{ids}): the lowest robust accuracy this run verified is "
                         f"{percent_text(lowest.accuracy)}% ({bounds}); the worst case keeps the suite's "
                         f"{percent_text(worst.robust.accuracy)}%, which its config reproduces")
    return notes


def expected_cell(clean_rates: list[float | None], unit_rates: list[list[float | None]]) -> Cell:
    """The expected accuracy (:func:`kwta_robust.randomness.expected_robust_accuracy`) as a percent cell with its
    95 % normal interval (± 1.96 standard errors, :data:`~kwta_robust.results.Z95`, clipped to [0, 1]); empty
    without error rates; no interval over one sample (no standard error to estimate: a zero-width interval)."""
    found = expected_robust_accuracy(clean_rates, unit_rates)
    if found is None:
        return Cell.acc(None)
    mean, se = found
    if len(clean_rates) < 2:
        return Cell(mean, None, True)
    return Cell(mean, (max(0.0, mean - Z95 * se), min(1.0, mean + Z95 * se)), True)


def expected_column(record: EvalRecord) -> list[str]:
    """``["expected"]`` for a record verdicted over several draws (a randomized model), else ``[]``: the header the
    cells of :func:`expected_cells` go under."""
    return ["expected"] if record_draws(record) > 1 and record.clean_error_rates else []


def expected_cells(record: EvalRecord, units: Sequence[AttackResult]) -> list[Cell]:
    """The expected-accuracy cell of a row over the attack ``units`` (:func:`expected_cell`), or ``[]`` where the
    record has no such column (:func:`expected_column`)."""
    if not expected_column(record):
        return []
    return [expected_cell(record.clean_error_rates, [u.error_rates for u in units])]


def randomness_notes(records: Sequence[EvalRecord]) -> list[str]:
    """For a randomized model (``provenance.randomness``, :mod:`kwta_robust.randomness`): how its verdicts were
    taken and, with several draws, the expected clean and robust accuracy (with a 95% normal interval over the
    samples, :func:`expected_cell`) beside the plurality numbers the tables show."""
    notes = []
    texts = point_texts(records)  # the columns' names
    for rec in records:
        found = rec.provenance.get("randomness")
        if not isinstance(found, dict) or not found.get("randomized"):
            continue
        prefix = f"[{rec.label}] " if len(records) > 1 else ""
        draws = int(found.get("draws", 1))
        text = (f"{prefix}randomized model (two seeds of torch's global RNG change its logits by up to "
                f"{float(found.get('max_output_diff', 0.0)):.3g})")
        if not found.get("seedable", True):
            text += "; it also changes under one seed (a generator of its own): its numbers are not reproducible"
        if draws == 1:
            notes.append(text + "; every verdict is one draw (verdict_draws: 1), so every number is one draw of a "
                                "random variable; set verdict_draws: auto")
            continue
        rates = rec.clean_error_rates
        clean = expected_cell(rates, [])
        points = [f"{texts[(w.norm, w.eps)]} {cell_text(expected_cell(rates, [r.error_rates for r in at]))} "
                  f"(plurality {percent_text(w.robust.accuracy)}%)"
                  for ix in [RecordIndex(rec)] for w in rec.worst_case for at in [ix.results_at(w.norm, w.eps)]]
        expected_text = "" if clean.value is None else (
            "; expected accuracy in % with 95% normal intervals (per sample, the fraction of draws right on the worst "
            "input the attacks found; biased high where the attacks stopped short of the worst input and low by "
            f"picking the worst of noisy estimates, net direction unknown): clean {cell_text(clean)}"
            + "".join(f", {p}" for p in points))
        notes.append(text + f"; every verdict is the plurality of {draws} draws" + expected_text)
    return notes


def evidence_notes(records: Sequence[EvalRecord]) -> list[str]:
    """The notes below every table of ``records`` (wide, narrow): the sanity attack's result, the budget check's
    verified kills, how a randomized model's verdicts were taken, the transfer sources and every flag with its
    evidence."""
    return (beyond_training_notes(records) + sanity_notes(records) + budget_check_notes(records)
            + randomness_notes(records) + record_notes(records))


# ---------------------------------------------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------------------------------------------
def is_cumulative(result: AttackResult) -> bool:
    """A cascade-mode number after the suite's first attack: robust after this attack and every earlier one. A
    table keeps such numbers and standalone ones (independent mode, first attacks) in separate columns."""
    return bool(result.cumulative and result.position > 0)


def result_of(record: EvalRecord | RecordIndex, label: str, norm: str, eps: float,
              cumulative: bool) -> AttackResult | None:
    """``record``'s result of ``label`` at ``(norm, eps)`` if it is of the kind ``cumulative`` says, else None (a
    table looks up every cell in a :class:`~kwta_robust.record_index.RecordIndex`: the record scans its list)."""
    r = record.result(label, norm, eps)
    return r if r is not None and is_cumulative(r) == cumulative else None


def model_columns(records: Sequence[EvalRecord]) -> tuple[list[str], Callable[[EvalRecord], list[Cell]]]:
    """The leading columns of a table with a row per record — model, activation, [training: when some model was
    adversarially trained], [weight sparsity: when some model is pruned], n, clean — and each record's cells."""
    trained = any_adversarially_trained(records)
    pruned = any((weight_sparsity_value(rec) or 0.0) > 0 for rec in records)
    headers = ["model", "activation"] + (["training"] if trained else []) + (["weight sparsity (%)"] if pruned else [])

    def cells(rec: EvalRecord) -> list[Cell]:
        training = [Cell(training_text(rec))] if trained else []
        sparsity = [Cell(weight_sparsity_value(rec), None, True)] if pruned else []
        return [Cell(record_name(rec)), Cell(activation_text(rec)), *training, *sparsity, Cell(rec.clean.n),
                Cell.acc(rec.clean)]
    return headers + ["n", "clean"], cells


def threat_points(records: Sequence[EvalRecord]) -> list[tuple[str, float, str]]:
    """Every ``(norm, eps, eps text)`` of ``records`` once, in their order; epsilons of one norm written alike (``0.3``
    and ``0.1 + 0.2``, both ``0.3``: an edited record, or two records) are written in full (``0.3`` and
    ``0.30000000000000004``), so that no two columns or tables share a name (a JSON row kept only one of them)."""
    found: dict[tuple[str, float], str] = {}  # a dict and each record indexed once (it was quadratic)
    for rec in indexed(records):
        for norm, eps in rec.threat_points():
            if (norm, eps) in found:
                continue
            at, w = rec.results_at(norm, eps), rec.worst(norm, eps)
            found[(norm, eps)] = at[0].eps_text if at else (w.eps_text if w else f"{eps:g}")
    points = [(norm, eps, text) for (norm, eps), text in found.items()]
    shared = Counter((norm, text) for norm, _, text in points)
    return [(norm, eps, repr(eps) if shared[(norm, text)] > 1 else text) for norm, eps, text in points]


def point_texts(records: Sequence[EvalRecord]) -> dict[tuple[str, float], str]:
    """Each threat point's text as the tables of ``records`` write it (``Linf 0.3``; epsilons written alike in
    full, :func:`threat_points`): a column, card or note per point never shares a name with another."""
    return {(norm, eps): point_text(norm, text) for norm, eps, text in threat_points(records)}


def attack_headers(headers: Sequence[str], others: Sequence[str], first: int) -> list[str]:
    """The headers of attack columns ``first``, ``first + 1``, ... (0-based) of a table whose other columns are
    ``others``: one that another column already has (an attack labelled ``worst case``, or ``+pgd`` next to a cascade's
    ``pgd``) names its column number (``worst case Linf 0.3 (column 5)``), so that a JSON row, whose keys are the
    headers, keeps every column and the worst case keeps its name."""
    taken = set(others)
    out: list[str] = []
    given: set[str] = set()  # out as a set (a list's ``in`` was quadratic in the columns)
    for i, header in enumerate(headers):
        out.append(f"{header} (column {first + i + 1})" if header in taken or header in given else header)
        given.add(out[-1])
    return out


def compare_table(records: Sequence[EvalRecord], title: str = "") -> Table:
    """Side by side: one row per record (clean, each attack at each eps, worst case per eps, noise score, flags)."""
    if not records:
        raise ConfigError("table: no records given")
    points = threat_points(records)
    indexes = indexed(records)  # each record's results looked up once per render, not scanned per cell
    columns: list[tuple[str, str, float, bool]] = [  # (label, norm, eps, cumulative), each point in suite order
        c for norm, eps, _ in points
        for c in suite_order([[(r.label, norm, eps, is_cumulative(r)) for r in ix.results_at(norm, eps)]
                              for ix in indexes])]
    eps_text = {(p[0], p[1]): p[2] for p in points}
    has_noise = any(rec.noise_score() is not None for rec in records)
    headers, model_cells = model_columns(records)
    worst = [f"worst case {point_text(p[0], p[2])}" for p in points] + ["noise score"] * has_noise + ["flags"]
    headers += attack_headers([f"{'+' if c[3] else ''}{c[0]} {point_text(c[1], eps_text[(c[1], c[2])])}"
                               for c in columns], headers + worst, len(headers)) + worst
    rows = []
    notes: list[str] = []
    for rec, ix in zip(records, indexes):
        row = model_cells(rec)
        for label, norm, eps, cumulative in columns:
            r = result_of(ix, label, norm, eps, cumulative)
            row.append(Cell.acc(r.robust if r else None))
        for norm, eps, _ in points:
            w = ix.worst(norm, eps)
            row.append(Cell.acc(w.robust if w else None))
        if has_noise:
            row.append(Cell(rec.noise_score(), record_score_interval(rec), computed=True, count=True))
        row.append(Cell(flag_codes(rec)))
        rows.append(row)
    notes += noise_score_notes(records) + other_noise_notes(records) + evidence_notes(records)
    if any(c[3] for c in columns):
        notes.insert(0, "'+' columns (cascade mode): robust accuracy after that attack and every attack left of it "
                        "at the same epsilon.")
    notes.insert(0, f"Robust accuracy in % with 95% {records[0].ci_method} intervals; worst case = per-sample "
                    "minimum over all attacks.")
    return Table(headers, rows, comparability_notes(records) + partial_notes(records) + notes, title)


def detail_table(record: EvalRecord) -> Table:
    """One record in long form: a row per (threat, attack), a worst-case row per threat, and the sanity attack."""
    headers = ["model", "threat", "attack", "kind", "robust", "attacked", "broken", "time (s)", "queries", "violations"]
    headers += expected_column(record)  # a randomized model's draws
    model = Cell(record_name(record))

    def row(threat: str, attack: str, kind: str, acc: Accuracy, *rest: Any,
            units: Sequence[AttackResult] = ()) -> list[Cell]:
        extra = list(rest) + [None] * (5 - len(rest))
        cells = [model, Cell(threat), Cell(attack), Cell(kind), Cell.acc(acc)] + [Cell(v) for v in extra]
        return cells + expected_cells(record, units)

    rows = [row("none", "clean", "-", record.clean, record.clean.n)]
    index = RecordIndex(record)
    for norm, eps, eps_text in threat_points([record]):
        at = index.results_at(norm, eps)
        w = index.worst(norm, eps)
        text = point_text(norm, eps_text)
        for i, r in enumerate(at):
            name = f"+{r.label}" if is_cumulative(r) else r.label
            rows.append(row(text, name, r.kind, r.robust, r.n_attacked, r.n_broken, round(r.wall_time_s, 2),
                            r.queries, r.violations, units=at[:i + 1] if is_cumulative(r) else [r]))
        if w is not None:
            rows.append(row(text, "worst case", "-", w.robust, units=at))
    for r in record.sanity:
        rows.append(row(point_text(r.norm, r.eps_text), f"{r.label} (sanity)", r.kind, r.robust, r.n_attacked,
                        r.n_broken, round(r.wall_time_s, 2), r.queries, r.violations, units=[r]))
    notes = [f"{record.label}: {record.dataset.get('name')} ({record.dataset.get('split')}), n={record.clean.n}, "
             f"mode={record.mode}; robust accuracy in % with 95% {record.ci_method} intervals."]
    notes += probe_notes(record)
    notes += beyond_training_notes([record]) + layer_notes(record) + budget_check_notes([record])
    notes += randomness_notes([record])
    notes += _flag_notes(record, "")
    if not record.diagnostics:
        notes.append("diagnostics: no flags")
    return Table(headers, rows, partial_notes([record]) + notes, record_name(record))
