"""``kwta-robust evaluate --dry-run`` and ``compare --dry-run``: what a run checks before its first attack, and the
plan it would run, in seconds, with nothing attacked and nothing written.

A dry run takes the run's own steps up to its clean pass: the model loaded as the run loads it (a checkpoint with
``weights_only``, or a factory with its weights; :func:`kwta_robust.runs.load_for_run`,
:func:`kwta_robust.loading.load_model` for ``compare``), the BPDA layer specs checked against it, the data loaded, every
model's output checked on it, the effective settings of every attack, the draws per verdict, the memory layout, the
layer probe and every BPDA attack's layers (:func:`kwta_robust.evaluate.prepared_run`), the gradient probes with the
flags of the checks over them that read nothing else (:data:`PROBE_CHECKS`: the run raises them with the same messages,
so a model whose gradient is cut is named before hours of attacks), the flags of the checks over the layer probe and
the layers each BPDA attack acts on (:data:`kwta_robust.plan_flags.LAYER_CHECKS`: BPDA on a module it cannot relax,
gates no BPDA attack acts on), and every attack built for its units
(:func:`kwta_robust.attack_plan.threat_point_units`, :func:`~kwta_robust.attack_plan.sanity_unit`); each fails with the
run's one-line error. Then the record at the output path as the run would find it, read and never changed
(:mod:`kwta_robust.resume`; sharded: :func:`kwta_robust.shards.sharded_record`): the units the run would resume, or the
one-line error it would stop with (another run writing it, an interrupted sharded run, a record of another config, model
or attack settings), kept in :attr:`RecordState.error` so the plan is shown with it. No record, report, adversarial
store, lock or folder is written, and every model is verified left as it was (state, training flags, hooks:
:class:`~kwta_robust.snapshot.ModelSnapshot`).

A ``--save-adversarial`` store is checked as the run's clean pass checks it, read only
(:func:`kwta_robust.adversarial_store.check_store`: its samples, and the units it holds against the record's).

Not done: the clean pass (where a resumed record's clean predictions are compared with the model's), the attacks,
the noise probes, the budget check, and the checks that read the attacks' results.

:func:`plan_table` is the plan as ``table --protocol`` shows a record (:mod:`kwta_robust.protocol`: a row per model
and attack label with its threats and effective settings, plus the units a record holds), its notes the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from attacks.base import attack_info
from attacks.noise import create_noise_probe, probe_params
from kwta_robust.adversarial_store import check_store, record_units, unit_key
from kwta_robust.attack_plan import kept_noise, kept_results, noise_seed, sanity_unit, threat_point_units
from kwta_robust.bpda_layers import describe_targets
from kwta_robust.compare import check_comparable, comparison_data, comparison_record_path, transfer_sources
from kwta_robust.config import EvalConfig, resolve_device
from kwta_robust.data import TensorData
from kwta_robust.diagnostics import run_checks
from kwta_robust.errors import KwtaRobustError
from kwta_robust.evaluate import prepared_run
from kwta_robust.html_report import report_path_for
from kwta_robust.layer_text import layer_notes, module_text
from kwta_robust.loading import ModelForEval
from kwta_robust.locks import check_free
from kwta_robust.protocol import HEADERS as PROTOCOL_HEADERS
from kwta_robust.noise_notes import NOISE_PREFIX, kind_names
from kwta_robust.numbers import count_text
from kwta_robust.plan_flags import layer_flags
from kwta_robust.protocol import (NOISE_NOTE, noise_settings_text, points_text, render_protocol_table, stage_gap_notes,
                                  unit_settings_text)
from kwta_robust.record_index import RecordIndex
from kwta_robust.randomness import Randomness, resume_conflict
from kwta_robust.report import Cell, Table, cell_text
from kwta_robust.results import EvalRecord, Flag
from kwta_robust.resume import StalePolicy, existing_record, parts_folder, prior_record, stale_reason, unplanned_unit
from kwta_robust.runs import check_sharding, load_for_run, record_path
from kwta_robust.shards import Sharding, refuse_unmerged_parts, shard_bounds, sharded_record, unit_ranges


@dataclass(frozen=True)
class UnitPlan:
    """One attack label of a model's plan: a protocol row (registry name, kind, the threat points it runs at, its
    effective ``settings`` and given ``params``, its transfer ``source``), the layers a BPDA attack acts on
    (``{name: "native" | "wrapped <kind>"}``, ``{}``: none) and how many of its units the run keeps from the record
    at its output (``None``: no record is resumed)."""

    label: str
    attack: str
    kind: str
    points: tuple[tuple[str, str], ...]
    settings: dict | None
    params: dict
    source: str | None = None
    bpda_layers: dict[str, str] | None = None
    resumed: int | None = None

    @property
    def units(self) -> int:
        """Its (attack, eps) units: one per threat point."""
        return len(self.points)


@dataclass
class RecordState:
    """The record at a model's output path as the run would find it (read, never changed).

    Attributes:
        path: where the run writes the record.
        status: the status of the record there (``partial``, ``complete``; ``None``: none there).
        finished: the attack units it holds (each attack at each threat point, and the sanity attack).
        noise: its noise probes the run keeps; ``noise_kept``: per configured probe, whether it keeps it.
        resume: whether the run resumes it (``False`` with ``--no-resume``: it is overwritten).
        error: the one-line error the run stops with because of its output (a record it cannot resume, another run
            writing it, the parts of an interrupted sharded run).
        parts: a sharded run: the finished parts in ``<record>.parts`` its jobs resume.
        refill: the resumed units its ``--save-adversarial`` store lacks, which the run attacks again for their
            inputs (their results kept).
    """

    path: Path
    status: str | None = None
    finished: int = 0
    noise: int = 0
    noise_kept: tuple[bool, ...] = ()
    resume: bool = True
    error: KwtaRobustError | None = None
    parts: int = 0
    refill: int = 0


@dataclass
class ModelPlan:
    """One model's plan: its label, the record the run starts (``record``: model, samples, draws per verdict and
    layout in ``provenance``, the layer probe in ``detection``, the gradient probes in ``probes``), its attacks, the
    record at its output, the flags the run will raise from its gradient probes (:func:`probe_flags`) and those from
    its layer probe and BPDA layers (``layer_flags``: :func:`kwta_robust.plan_flags.layer_flags`)."""

    label: str
    record: EvalRecord
    units: list[UnitPlan]
    state: RecordState
    flags: list[Flag] = field(default_factory=list)
    layer_flags: list[Flag] = field(default_factory=list)


#: The checks over the gradient probes whose verdict and message depend on the probes (and the model's and layer
#: probe's description) alone, not on the attacks' results: the dry run raises them as the run will.
PROBE_CHECKS: tuple[str, ...] = ("zero-gradients", "probabilities-not-logits", "batch-dependent", "low-precision")


def probe_flags(record: EvalRecord, cfg: EvalConfig) -> list[Flag]:
    """The flags of :data:`PROBE_CHECKS` over ``record``'s gradient probes, with the config's thresholds (none
    without probes: diagnostics off)."""
    return run_checks(record, cfg.diagnostics.thresholds, PROBE_CHECKS) if record.probes else []


@dataclass
class DryRun:
    """What ``evaluate --dry-run`` / ``compare --dry-run`` found: a plan per model, the config, the samples in the
    split (``total``), the files the run would write (``outputs``: kind → path) and the sharding."""

    models: list[ModelPlan]
    cfg: EvalConfig
    total: int
    outputs: dict[str, str] = field(default_factory=dict)
    sharding: Sharding | None = None

    @property
    def error(self) -> KwtaRobustError | None:
        """The first one-line error the run would stop with because of its outputs (``None``: it would start)."""
        return next((m.state.error for m in self.models if m.state.error is not None), None)


def dry_run_one(cfg: EvalConfig, *, checkpoint: str | None = None, model_factory: str | None = None,
                weights: str | None = None, factory_kwargs: dict | None = None, allow_pickle: bool = False,
                out: str | Path | None = None, config_path: str | Path = "config", save_adversarial: str | None = None,
                resume: bool = True, sharding: Sharding | None = None, grid_cell: Mapping[str, Any] | None = None,
                ) -> DryRun:
    """:func:`kwta_robust.runs.evaluate_one` (the same arguments, where they choose what runs) up to its first
    attack, writing nothing: see the module docstring. Errors are the run's; what the run would refuse of its outputs
    is in :attr:`DryRun.error`."""
    check_sharding(sharding, save_adversarial)
    device = resolve_device(cfg.device)
    if sharding is not None:
        sharding.create_executor()  # its options checked; nothing starts
    loaded, data, cfg = load_for_run(cfg, device, checkpoint=checkpoint, model_factory=model_factory,
                                     weights=weights, factory_kwargs=factory_kwargs, allow_pickle=allow_pickle,
                                     grid_cell=grid_cell)
    path = record_path(out, loaded.label, config_path)
    plan = plan_model(loaded, data, cfg, path, {}, resume=resume, strict=True, stale=StalePolicy(),
                      locks={"--out": path, "--save-adversarial": save_adversarial}, sharding=sharding,
                      store=save_adversarial)
    outputs = {"record": str(path), "report": str(report_path_for(path))}
    if save_adversarial is not None:
        outputs["adversarial store"] = str(save_adversarial)
    return DryRun([plan], cfg, len(data), outputs, sharding)


def dry_run_compare(models: Sequence[ModelForEval], cfg: EvalConfig, out_dir: Path, *, transfer: bool = True,
                    resume: bool = True, sharding: Sharding | None = None) -> DryRun:
    """:func:`kwta_robust.compare.compare_models` (same arguments; its records in ``out_dir``) up to its first
    attack, writing nothing: see the module docstring."""
    check_comparable(models, cfg, out_dir, sharding)
    if sharding is not None:
        sharding.create_executor()
    data, cfg = comparison_data(models, cfg)[:2]  # the data read once, its file pinned in cfg
    plans = []
    for m in models:
        path = comparison_record_path(out_dir, m.label)
        plans.append(plan_model(m, data, cfg, path, transfer_sources(models, m, transfer), resume=resume,
                                strict=False, stale=StalePolicy("--out-dir"), locks={"record": path},
                                sharding=sharding))
    outputs = {"records": str(out_dir), "table": str(out_dir / "compare.md"), "report": str(out_dir / "compare.html")}
    return DryRun(plans, cfg, len(data), outputs, sharding)


def plan_model(loaded: ModelForEval, data: TensorData, cfg: EvalConfig, path: Path,
               sources: Mapping[str, ModelForEval], *, resume: bool, strict: bool, stale: StalePolicy,
               locks: Mapping[str, str | Path | None], sharding: Sharding | None = None,
               store: str | Path | None = None) -> ModelPlan:
    """One model's plan (:class:`ModelPlan`) through the run's own steps (:func:`~kwta_robust.evaluate.prepared_run`)
    with these transfer ``sources``; ``path``: its record; ``strict``: a BPDA layer spec must match one of its
    modules (``compare`` relaxes it); ``stale``: the option that named the record; ``locks``: the outputs the run
    locks, by the name its error gives them; ``store``: its ``--save-adversarial`` file, checked as its clean pass
    checks it (:func:`~kwta_robust.adversarial_store.check_store`) where its record would not stop it first."""
    with prepared_run(loaded.model, data, cfg, loaded.info,
                      transfer_sources={k: s.model for k, s in sources.items()}) as runner:
        if sharding is not None:
            shard_bounds(runner.n, cfg.batch_size, sharding.shards)  # enough batches for the shards
        state, kept = record_state(runner, loaded, sources, path, resume, stale, locks, sharding)
        saved = None
        if store is not None and state.error is None:
            saved = check_store(store, runner.x, runner.y, runner.data.indices, resume,
                                record_units(kept if kept is not None else runner.record))
        if kept is not None and kept.detection and sharding is None:
            runner.record.detection = dict(kept.detection)  # a resumed run keeps its record's layer probe
        specs = cfg.labelled_attacks(int(runner.data.num_classes))
        runner.detect(specs, strict)
        if kept is not None and kept.probes:
            runner.record.probes = dict(kept.probes)  # a resumed run keeps its record's gradient probes
        runner.probes()  # on the run's probe batch (diagnostics.gradient_batch); nothing is written
        units = plan_units(runner, specs, kept)
        if kept is not None and saved is not None:
            state.refill = refill_count(runner, specs, kept, saved)
    return ModelPlan(loaded.label, runner.record, units, state, probe_flags(runner.record, cfg),
                     layer_flags(runner.record, units, cfg))


def record_state(runner: Any, loaded: ModelForEval, sources: Mapping[str, ModelForEval], path: Path, resume: bool,
                 stale: StalePolicy, locks: Mapping[str, str | Path | None],
                 sharding: Sharding | None) -> tuple[RecordState, EvalRecord | None]:
    """The record at ``path`` as the run would find it (:class:`RecordState`), and the record it would resume
    (``None``: none). ``runner``: :func:`~kwta_robust.evaluate.prepared_run`'s, whose fresh record and settings
    the run compares the one there with."""
    state = RecordState(path, resume=resume)
    try:
        check_free(locks)
        if not resume:  # sharded or not
            found = prior_record(path, stale)  # a file that is not a record is never overwritten
            if found is not None:
                state.status = str(found.get("status"))
                state.finished = len(found.get("results") or []) + len(found.get("sanity") or [])
            return state, None
        if sharding is not None:
            old = sharded_record(path, loaded, runner.cfg, runner.data, sources, resume, stale)
            folder = parts_folder(path)
            state.parts = len(list(folder.glob("*.json"))) if old is None and folder.is_dir() else 0
        else:
            refuse_unmerged_parts(path, resume)
            old = existing_record(path, stale)
            if old is not None:
                state.status, state.finished = old.status, len(old.results) + len(old.sanity)
                found_draws = Randomness.from_dict(runner.record.provenance["randomness"])
                reason = (stale_reason(old, runner.record, runner.settings) or unplanned_unit(old, runner.units)
                          or resume_conflict(old, found_draws))
                if reason is not None:
                    raise stale.refuse(path, reason)
    except KwtaRobustError as exc:
        state.error = exc
        return state, None
    if old is not None:
        state.status, state.finished = old.status, len(old.results) + len(old.sanity)
        state.noise_kept = tuple(kept_noise(old, runner.cfg, spec) for spec in runner.cfg.noise)
        state.noise = sum(state.noise_kept)
    return state, old


def plan_units(runner: Any, specs: Sequence[Any], kept: EvalRecord | None) -> list[UnitPlan]:
    """Every attack of the plan, built for each of its units as the run builds it: the configured attacks and
    transfer attacks at every threat point, then the sanity attack where the diagnostics run it; each with the
    units the run keeps from ``kept`` (:func:`~kwta_robust.attack_plan.kept_results`)."""
    cfg, rows, index = runner.cfg, {}, None if kept is None else RecordIndex(kept)  # looked up per threat point
    for threat in cfg.threats:
        for eps, eps_text in zip(threat.epsilons, threat.eps_text):
            planned, seeds, _ = threat_point_units(cfg, specs, threat.norm, eps, runner.sources, runner.bpda_layers)
            stored = [None] * len(planned) if index is None else \
                kept_results(index, planned, seeds, threat.norm, eps, cfg.mode == "cascade")
            for p, found in zip(planned, stored):
                row = rows.setdefault(p.label, [p, [], 0])
                row[1].append((threat.norm, eps_text))
                row[2] += found is not None
    units = [_unit(runner, p, points, None if kept is None else resumed) for p, points, resumed in rows.values()]
    sanity = cfg.diagnostics.sanity
    if sanity is not None and cfg.diagnostics.enabled:  # the runner runs it only then
        planned, seed = sanity_unit(cfg, runner.sanity_layers)
        planned.build(seed, {}, "", {})
        done = None if kept is None else sum(r.key == (planned.label, sanity.norm, sanity.eps) for r in kept.sanity)
        units.append(_unit(runner, planned, [(sanity.norm, sanity.eps_text)], done))
    return units


def refill_count(runner: Any, specs: Sequence[Any], kept: EvalRecord, saved: Collection[str]) -> int:
    """How many units the run keeps from ``kept`` whose inputs its ``--save-adversarial`` store lacks (``saved``:
    the keys of the units it holds): the run attacks them again for their inputs, their results kept."""
    cfg, count, index = runner.cfg, 0, RecordIndex(kept)
    for threat in cfg.threats:
        for eps in threat.epsilons:
            planned, seeds, _ = threat_point_units(cfg, specs, threat.norm, eps, runner.sources, runner.bpda_layers)
            stored = kept_results(index, planned, seeds, threat.norm, eps, cfg.mode == "cascade")
            count += sum(r is not None and unit_key(p.label, threat.norm, eps) not in saved
                         for p, r in zip(planned, stored))
    return count


def _unit(runner: Any, planned: Any, points: Sequence[tuple[str, str]], resumed: int | None) -> UnitPlan:
    """A planned attack (:class:`~kwta_robust.attack_plan.PlannedAttack`) as a :class:`UnitPlan` (its params as the
    record keeps them, ``AttackResult.params``)."""
    cfg = runner.cfg
    params = dict(planned.params) if planned.source is None else \
        {"inner": cfg.transfer.attack, "inner_params": dict(cfg.transfer.params)}
    layers = None if planned.layers is None else describe_targets(runner.model, planned.layers)
    return UnitPlan(planned.label, planned.attack, attack_info(planned.attack).kind, tuple(points),
                    runner.settings.get(planned.label), params, planned.source, layers, resumed)


def shard_ranges(plan: DryRun) -> list[tuple[int, int]]:
    """The sample ranges a sharded run cuts its jobs into (:func:`kwta_robust.shards.unit_ranges`); ``[]``
    unsharded."""
    if plan.sharding is None or not plan.models:
        return []
    return unit_ranges(int(plan.models[0].record.dataset["n"]), plan.cfg.batch_size, plan.sharding.shards)


# ---------------------------------------------------------------------------------------------------------------
# the plan as a protocol table
# ---------------------------------------------------------------------------------------------------------------
#: The plan's columns: the protocol's (:data:`kwta_robust.protocol.HEADERS`) up to the seed, the units of each
#: attack (one per threat point) and how many the run keeps from the record at its output, then the settings.
HEADERS: tuple[str, ...] = (*PROTOCOL_HEADERS[:PROTOCOL_HEADERS.index("seed") + 1], "units", "resumed", "settings")
#: The settings column (the protocol's legend, :data:`kwta_robust.protocol.NOTES`, for attacks yet to run).
SETTINGS_NOTE = ("settings: each attack's effective hyperparameters as the run records them (the given params and "
                 "every default of the attack it builds; inner attacks after ';', a/b/c: one value per BPDA "
                 "temperature stage, [a, b]: a list); units: one per threat point; resumed: the units the run keeps "
                 "from the record at its output.")
#: Before the settings of a BPDA attack that finds no layer to act on (``table --protocol``'s
#: :data:`kwta_robust.protocol.NO_LAYER`, for an attack yet to run).
NO_LAYER = "acts on no layer, so only its first stage's inner attack will run, unchanged"
#: What a dry run leaves to the run.
NOT_RUN = ("not run by a dry run: the clean pass (where a resumed record's clean predictions are compared with the "
           "model's), the attacks, the noise probes, the budget check and the checks that read the attacks' results")


def plan_table(plan: DryRun, title: str = "Dry run: attack plan") -> Table:
    """The plan as a protocol table (:func:`kwta_robust.protocol.protocol_table`'s rows, with :data:`HEADERS`): a
    row per model and attack label, then per configured noise probe (units 1, resumed 1 where the record at its
    output holds it; its settings with the seed of its draws); the model, data, threats, layers, noise probes,
    records and outputs in its notes (:func:`plan_notes`)."""
    rows = []
    for m in plan.models:
        for u in m.units:
            text = unit_settings_text(u.settings, u.params, source=u.source)
            rows.append([Cell(m.label), Cell(u.label), Cell(u.attack), Cell(u.kind), Cell(points_text(u.points)),
                         Cell(plan.cfg.seed), Cell(u.units), Cell(u.resumed),
                         Cell(f"{NO_LAYER}; {text}" if u.bpda_layers == {} else text)])
        names = kind_names([spec.kind for spec in plan.cfg.noise])  # as the record's tables will name each probe
        for i, spec in enumerate(plan.cfg.noise):  # resumed: whether the record at its output holds the probe
            kept = m.state.noise_kept[i] if i < len(m.state.noise_kept) else None
            rows.append([Cell(m.label), Cell(names[i]), Cell(spec.kind), Cell("noise"),
                         Cell(count_text(len(spec.levels), "level")), Cell(plan.cfg.seed), Cell(1),
                         Cell(None if kept is None else int(kept)),
                         Cell(noise_settings_text(spec.levels, spec.draws, effective_noise_params(spec),
                                                  noise_seed(plan.cfg.seed, spec)))])
    notes = [*plan_notes(plan), *stage_gap_notes(cell_text(row[-1]) for row in rows)]  # after the settings legend
    return Table(list(HEADERS), rows, [*notes, NOISE_NOTE] if plan.cfg.noise else notes, title=title, key_columns=2)


def effective_noise_params(spec: Any) -> dict[str, Any]:
    """A configured noise probe's params with its defaults (numenta's ``value``), as its record will hold them
    (:func:`attacks.noise.probe_params`, which the runner records)."""
    return probe_params(create_noise_probe(spec.kind, **spec.params), spec.params)


def render_dry_run(plan: DryRun, fmt: str = "md") -> str:
    """:func:`plan_table` in the table format ``fmt`` (``md``: within 120 columns, the settings listed below the
    table as ``table --protocol`` lists them)."""
    return render_protocol_table(plan_table(plan), fmt)


def plan_notes(plan: DryRun) -> list[str]:
    """The plan's notes: what was checked, the data, the threats, per model its description, layers and record,
    the noise probes, the shards, the outputs, what a dry run does not run, the settings legend."""
    cfg, several = plan.cfg, len(plan.models) > 1
    dataset = plan.models[0].record.dataset
    shape = "×".join(str(d) for d in dataset.get("input_shape") or [])
    what, whose = ("models", "models'") if several else ("model", "model's")
    notes = [f"dry run: nothing was attacked or written; the config, the {what} (loaded as the run loads "
             f"{'them' if several else 'it'}), the data, the {whose} output on the data, the layer probe, the BPDA "
             "layers and every attack of the plan were checked as the run checks them",
             f"data: {dataset['name']} ({dataset['split']}), {dataset['n']:,} of {plan.total:,} samples (sample seed "
             f"{dataset['sample_seed']}), {dataset['num_classes']} classes, inputs {shape}",
             f"threats: {points_text([(t.norm, e) for t in cfg.threats for e in t.eps_text]) or 'none'}; "
             f"{cfg.mode} mode, batch size {cfg.batch_size}, seed {cfg.seed}"]
    for i, m in enumerate(plan.models):
        notes += model_notes(m, several, len(cfg.noise), plan.models[:i])
    notes += [noise_text(spec, name) for spec, name in zip(cfg.noise, kind_names([s.kind for s in cfg.noise]))]
    if plan.sharding is not None:
        ranges = ", ".join(f"{a}:{b}" for a, b in shard_ranges(plan))
        notes.append(f"shards: {plan.sharding.shards} workers of the {plan.sharding.executor} executor; the samples "
                     f"cut into the ranges {ranges}")
    notes.append("the run writes: " + "; ".join(f"{kind} {path}" for kind, path in plan.outputs.items()))
    return [*notes, NOT_RUN, SETTINGS_NOTE]


def model_notes(plan: ModelPlan, prefix: bool, noise: int, earlier: Sequence[ModelPlan] = ()) -> list[str]:
    """One model's notes: its description, draws per verdict and layout; the layer probe; the layers of each BPDA
    attack; its record (:func:`record_text`). ``prefix``: start the layer notes with its label (several models);
    ``noise``: the configured noise probes; ``earlier``: the models ``compare`` evaluates before it."""
    info, provenance = plan.record.model, plan.record.provenance
    found = provenance.get("randomness") or {}
    draws = f"randomized: every verdict the plurality of {found.get('draws')} draws" if found.get("randomized") \
        else "deterministic: one draw per verdict"
    dtypes = ", ".join(info.get("parameter_dtypes") or []) or "no parameters"
    lines = [f"model {plan.label}: {info.get('architecture')}, {int(info.get('num_params') or 0):,} parameters "
             f"({dtypes}) on {provenance.get('device')}, from {info.get('source')}; {draws}; memory layout "
             f"{provenance.get('layout')}"]
    lead = f"{plan.label}: " if prefix else ""
    lines += [lead + note for note in layer_notes(plan.record)]
    for u in plan.units:
        if u.bpda_layers is not None:
            layers = ", ".join(f"{module_text(n)} ({how})" for n, how in u.bpda_layers.items()) or \
                "no layer, so only its first stage's inner attack will run, unchanged"
            lines.append(f"{lead}{u.label} acts on: {layers}")
    lines += [f"{lead}the run will flag, from the layer probe and the BPDA layers: {f.severity} {f.code}: {f.message}"
              for f in plan.layer_flags]
    if plan.record.probes:
        lines += [f"{lead}gradient probes: {f.severity} {f.code}: {f.message}" for f in plan.flags] or [
            f"{lead}gradient probes ({plan.record.probes.get('n')} inputs): none of {', '.join(PROBE_CHECKS)} flagged"]
    return [*lines, record_text(plan, noise, earlier)]


def record_text(plan: ModelPlan, noise: int, earlier: Sequence[ModelPlan] = ()) -> str:
    """What the run would do with the record at the model's output (:class:`RecordState`), for the notes;
    ``earlier``: the models ``compare`` evaluates (and writes the records of) before it meets this record."""
    state = plan.state
    head = f"record {state.path}: "
    if state.error is not None:
        held = f"holds a {state.status} record of {state.finished} finished attack units; " if state.status else ""
        return head + f"{held}{stop_text(plan, earlier)}: {state.error}"
    if state.parts:
        return head + f"{state.parts} finished parts of an interrupted sharded run in {parts_folder(state.path)}, " \
                      "resumed by their jobs"
    if state.status is None:
        return head + "none yet; every unit runs"
    if not state.resume:
        return head + f"holds a {state.status} record of {state.finished} finished attack units; --no-resume: it " \
                      "is overwritten and every unit runs again"
    total = sum(u.units for u in plan.units)
    resumed = sum(u.resumed or 0 for u in plan.units)
    again = state.finished - resumed
    return head + (f"a {state.status} record; {resumed} of {total} attack units finished and resumed, "
                   f"{total - resumed} to run" + (f" ({again} finished with another seed run again)" if again > 0
                                                  else "")
                   + (f"; {state.refill} of the resumed attacked again for their --save-adversarial inputs "
                      "(finished without it; their results kept)" if state.refill else "")
                   + (f"; {state.noise} of {noise} noise probes kept" if noise else ""))


def stop_text(plan: ModelPlan, earlier: Sequence[ModelPlan]) -> str:
    """When the run stops at this model's record: before its first attack, or (``compare``, which evaluates its
    models one after another) once the ``earlier`` models are evaluated and their records written."""
    if not earlier:
        return "the run would stop before its first attack"
    blocked = next((m.label for m in earlier if m.state.error is not None), None)
    if blocked is not None:
        return f"the run stops at {blocked}'s record first, and would stop here too"
    names = ", ".join(m.label for m in earlier)
    return (f"the run would evaluate {names} and write {'its record' if len(earlier) == 1 else 'their records'}, "
            f"then stop before attacking {plan.label}")


def noise_text(spec: Any, name: str = "") -> str:
    """A configured noise probe (``NoiseSpec``) for the notes: ``noise probe numenta [2]: levels ...``, after its
    ``name`` (:func:`~kwta_robust.noise_notes.kind_names`, its row's label), else its kind."""
    params = "".join(f", {k} {v}" for k, v in spec.params.items())
    levels = ", ".join(f"{v:g}" for v in spec.levels)
    return (f"noise probe {name.removeprefix(NOISE_PREFIX) or spec.kind}: levels {levels}, {spec.draws} "
            f"draw{'s' if spec.draws != 1 else ''} per level{params}")
