"""The evaluation runner: one model, one config → one :class:`~kwta_robust.results.EvalRecord`.

The runner owns device, batching, eval mode, seeding, clipping and verification; attacks only turn
``(model, x, y, threat)`` into ``x_adv`` (see :mod:`attacks.cascade`). For every threat model and epsilon it runs
the attack list as a cascade (Croce & Hein 2020: each attack only on samples still robust) or independently,
projects and verifies every output, re-classifies it, and records per-sample flags and the per-sample worst case.
The model probes run after the clean pass, before any attack; the noise probes and the gradient-masking
diagnostics (:mod:`kwta_robust.diagnostics`) after the attacks. Before any attack, the layer probe
(:mod:`kwta_robust.detect`) finds top-k gates, piecewise-constant and randomized layers (evidence in
``record.detection``) and every BPDA attack's ``bpda_layers`` is resolved against it (:mod:`kwta_robust.bpda_layers`;
modules it can only pass straight through: :mod:`kwta_robust.straight_through`); each BPDA result records its layers.

Guarantees:

* **The model is left exactly as it was**: its full ``state_dict`` (parameters and buffers such as kWTA duty
  cycles and BatchNorm statistics), every module's ``training`` flag, every parameter's ``requires_grad`` and every
  module's hooks are snapshotted before and compared after each attack (:mod:`kwta_robust.snapshot`); a change
  raises :class:`ModelChangedError` naming the attack.
* **Seeds**: the sample permutation uses ``sample_seed`` (default ``seed``); each (attack, norm, eps) unit gets
  ``derive_seed(seed, label, norm, eps)`` (``unit_seeds``; a transfer attack's label is ``transfer`` there, whatever
  its own) — stable, independent of unit order, never the clock. torch's global RNG, which only a randomized model
  draws from, is forked and seeded for every batch from the unit's seed and the batch's sample ids (restored after).
* **Randomized models**: before the clean pass a probe finds whether the model's outputs are random; if so every
  verdict is the plurality of ``verdict_draws`` draws and the per-sample error rates are recorded
  (:mod:`kwta_robust.randomness`, :mod:`attacks.verdicts`).
* **Resumable**: after each finished unit the partial record is written atomically to ``out_path``; a re-run with
  the same config, model and sample values skips finished units and keeps their results (a mismatch is a one-line
  error), unless this version builds their attacks with other settings (:mod:`kwta_robust.resume`).
* ``save_adversarial``: inputs and predictions per unit, one tensors-only file (:mod:`kwta_robust.adversarial_store`);
  a unit a run without it finished is attacked again for its inputs (the same seeds: its recorded flags).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from attacks.base import ThreatModel, attack_info, eval_mode, finite_or_none, format_eps, rng_scope, threat_text
from attacks.cascade import AttackOutcome, run_verified, worst_case
from attacks.noise import run_noise_probe
from attacks.verdicts import Verdict, classify_batches
from kwta_robust.attack_plan import (PlannedAttack, batch_seed, kept_noise, kept_results, kept_unit_count,  # noqa: F401
                                     model_rng_seed, noise_seed, planned_settings, planned_units, sanity_unit,
                                     threat_point_units)
from kwta_robust.bpda_layers import bpda_fields, describe_targets
from kwta_robust.bpda_preflight import LayerProbe, Prechecked, plan_bpda, reusable_probe, run_precheck
from kwta_robust.config import AttackSpec, EvalConfig, derive_seed
from kwta_robust.model_failures import model_code_failures
from kwta_robust.plugin_repeat import repeat_plugin_unit
from kwta_robust.randomness import (PROBE_INPUTS, Randomness, log_randomness, probe_randomness, resume_conflict,
                                     unseeded_cause)
from kwta_robust.budget_check import KeptPlans, kept_plans, reruns_left, run_budget_check
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import SEVERITIES, run_checks
from kwta_robust.adversarial_store import AdversarialStore, record_units, store_path, unit_key
from kwta_robust.errors import ConfigError, eval_out_of_memory
from kwta_robust.fresh_record import count_relus, new_record, probed_model, utc_now
from kwta_robust.eval_part import EvalPart
from kwta_robust.locks import lock_outputs
from kwta_robust.resume import StalePolicy, discard_stale, drop_unmerged_parts, note_resume, resumable_record
from kwta_robust.runtime import evaluation_layout
from kwta_robust.samples import select_samples
from kwta_robust.model_checks import check_transfer_sources, probe_for_data, probe_transfer_sources
from kwta_robust.model_probes import measure_model
from kwta_robust.numbers import percent_text
from kwta_robust.record_index import RecordIndex
from kwta_robust.snapshot import ModelChangedError, ModelSnapshot, model_device, state_digest  # noqa: F401 (re-export)
from kwta_robust.results import Accuracy, AttackResult, EvalRecord, NoiseResult, WorstCase, RecordEncoder, save_record
from kwta_robust.straight_through import note_straight_through

logger = logging.getLogger(__name__)


# --- the runner --------------------------------------------------------------------------------------------------
class _Runner:
    """State of one evaluation (kept off the public API; :func:`evaluate` is the entry point)."""

    def __init__(self, model: nn.Module, data: Any, cfg: EvalConfig, model_info: Mapping[str, Any],
                 out_path: Path | None, resume: bool, sources: Mapping[str, nn.Module],
                 save_adversarial: Path | None, command: Sequence[str] | None, progress: bool,
                 part: EvalPart | None = None, stale: StalePolicy = StalePolicy(), strict: bool | None = None,
                 layer_probe: LayerProbe | None = None) -> None:
        self.model, self.cfg, self.out_path, self.progress, self.part = model, cfg, out_path, progress, part
        self.stale, self.sources = stale, check_transfer_sources(sources)
        self.device = model_device(model)
        for name, src in self.sources.items():
            if model_device(src) != self.device:
                raise ConfigError(f"transfer source {name!r} is on {model_device(src)}, the model on {self.device}")
        self.data = select_samples(data, cfg)
        if part is not None and part.samples:  # a shard: whole batches of the selection
            self.data = self.data.subset(slice(part.start, part.stop))
        self.ids = self.data.indices.cpu()  # the samples' names: every batch's seed derives from them
        self.x, self.y = self.data.x.to(self.device), self.data.y.to(self.device)
        self.n = int(self.x.shape[0])
        self._probe(model_info)
        self.outer = self._capture()  # as handed to us (training flags as the caller had them)
        self.strict, self.layer_probe = strict, layer_probe  # strict None: a dry run, no BPDA pre-check
        self.checked: Prechecked | None = None  # the BPDA pre-check's findings (run's layout): detect() keeps them
        self.kept_detection = False  # the pre-check took a resumed record's detection
        self.inner = self.outer  # replaced by a capture inside eval mode, used after every attack
        self.digest = state_digest(model)
        self.source_digests = {k: state_digest(v) for k, v in self.sources.items()}
        self.resumed_units: int | None = None
        self.record, self.kept_plans = self._start_record(model_info, resume, command)  # a full resume: its check plan
        self.index = RecordIndex(self.record)  # the record's lookups and puts (no scan of its results per unit)
        self._started = time.perf_counter()
        self._earlier_wall = float(self.record.provenance.get("wall_time_s") or 0.0)  # time of interrupted runs
        self.store: AdversarialStore | None = None
        self.save_adversarial, self.resume, self.encoder = save_adversarial, resume, RecordEncoder()  # saved units
        self.bpda_layers: dict[str, dict[str, Any]] = {}
        self.sanity_layers: dict[str, Any] | None = None  # a BPDA sanity attack: the config's bpda_layers, resolved
        self.draws, self.verdict_seeds = 1, None  # per verdict: draws; a randomized model's seeds (resolve_draws)

    def _probe(self, model_info: Mapping[str, Any]) -> None:
        """Before any work: the model (and every transfer source) runs on these inputs and returns finite logits
        for this data set's classes (:func:`~kwta_robust.model_checks.probe_model`)."""
        batch, classes = self.x[:2], int(self.data.num_classes)
        probe_for_data(self.model, model_info, batch, classes, self.data.name)
        probe_transfer_sources(self.sources, batch, classes, self.data.name)

    # --- record lifecycle ------------------------------------------------------------------------------------
    def _start_record(self, model_info: Mapping[str, Any], resume: bool,
                      command: Sequence[str] | None) -> tuple[EvalRecord, KeptPlans | None]:
        fresh = self._fresh = new_record(self.model, model_info, self.digest, self.data, self.cfg, self.part,
                                         self.device, self.source_digests, command)
        self.settings = planned_settings(self.cfg, int(self.data.num_classes), self.sources)  # label -> settings
        self.units = planned_units(self.cfg, int(self.data.num_classes), list(self.sources))  # (label, norm, eps)
        old = None if self.out_path is None else resumable_record(self.out_path, fresh, self.stale, resume,
                                                                  self.settings, self.units)
        if old is None:
            return fresh, None
        self.resumed_units = kept_unit_count(old, self.cfg, int(self.data.num_classes), list(self.sources))
        old.status = "partial"
        every = self.resumed_units >= len(self.units) + len(self.cfg.noise)  # all kept: the budget check may re-run
        plans = kept_plans(old, self.cfg.diagnostics, self.cfg.seed) if every and self.part is None else None
        computes = not every or reruns_left(plans)  # all kept, no budget check left: nothing runs
        note_resume(old, fresh, self.out_path, str(self.device), torch.get_num_threads(), computes, self.stale)
        return old, plans

    def _stale(self, reason: str) -> None:
        """The resumed record turned out stale (``reason`` completes "PATH ..."): the policy's one-line error, or
        (``set_aside``) moved to ``superseded/`` and the run starts afresh."""
        if self.kept_detection and self.stale.set_aside:  # the pre-check read this record's detection: the fresh
            self.precheck(None)  # record's is checked (and probed) anew, before the stale one is moved
        discard_stale(self.out_path, reason, self.record.config_hash, self.stale)
        kept = {k: v for k, v in self.record.provenance.items() if k in ("layout", "randomness")}
        self._fresh.provenance.update(kept, torch_threads=torch.get_num_threads())
        self.record, self.resumed_units, self._earlier_wall, self.kept_plans = self._fresh, None, 0.0, None
        self.index = RecordIndex(self.record)

    def save(self) -> None:
        self.record.model = probed_model(self.record, None if self.part is None else self.part.detection)  # as found
        self.record.provenance["wall_time_s"] = self._earlier_wall + time.perf_counter() - self._started
        if self.out_path is not None:
            save_record(self.record, self.out_path, self.encoder)
        if self.store is not None and self.record.status == "complete":
            self.store.close(record_units(self.record))  # the units, each saved as it finished, joined into one file

    def _capture(self) -> dict[str, ModelSnapshot]:
        snaps = {"model": ModelSnapshot.capture(self.model)}
        snaps.update({f"source {k}": ModelSnapshot.capture(v) for k, v in self.sources.items()})
        return snaps

    def enter_eval(self) -> None:
        """Call once all models are in eval mode: later checks compare against this state."""
        self.inner = self._capture()

    def prepare(self, stack: contextlib.ExitStack, layout: str) -> None:
        """Every model in eval mode and the run's memory ``layout`` until ``stack`` closes; the draws per verdict."""
        models = [self.model, *self.sources.values()]
        probe_x = self.x[: min(self.n, 32)]
        for mode in (torch.enable_grad(), *map(eval_mode, models)):  # a plug-in attack under the caller's no_grad
            stack.enter_context(mode)  # would get no gradient: gradients on, as the CLI and kwta_robust.api run

        def probe() -> list[Tensor]:  # the global RNG seeded and restored: a randomized model draws the same noise
            with torch.no_grad(), rng_scope(0):
                return [m(probe_x) for m in models]

        self.record.provenance["layout"] = stack.enter_context(evaluation_layout(models, layout, self.device, probe))
        self.record.provenance.setdefault("torch_threads", torch.get_num_threads())  # resumed: the first run's
        self.enter_eval()
        if self.strict is not None:  # an evaluation: BPDA refused before the clean pass, no record written
            self.precheck(self.record.detection or None)
        self.resolve_draws()

    def precheck(self, kept: Mapping[str, Any] | None) -> None:
        """The BPDA pre-check in the run's memory layout (:func:`~kwta_robust.bpda_preflight.run_precheck`): its
        layer probe and straight-through notes are the runner's (:meth:`detect`); ``kept``: a resumed record's
        detection (kept: no new probe; the notes are added to it now)."""
        made = self.layer_probe  # a comparison's: kept only where it was made in this run's layout
        reusable = kept is None and made is not None and made.layout == self.record.provenance["layout"]
        given = made.detection if reusable else None
        specs = self.cfg.labelled_attacks(int(self.data.num_classes))
        self.checked, resumed = run_precheck(self.model, self.x, self.cfg, specs, bool(self.strict),
                                             None if self.part is None else self.part.detection, kept, given)
        self.verify("the BPDA pre-check")
        self.kept_detection = kept is not None  # the record turns stale: checked again, with a probe (_stale)
        if resumed is not None:
            self.record.detection = resumed

    def verify(self, culprit: str, snapshots: Mapping[str, ModelSnapshot] | None = None) -> None:
        snaps = self.inner if snapshots is None else snapshots
        snaps["model"].verify(self.model, culprit)
        for name, src in self.sources.items():
            snaps[f"source {name}"].verify(src, culprit)

    # --- steps -----------------------------------------------------------------------------------------------
    def verdict_rng(self, batch_ids: Tensor) -> int:
        """The seed of every verdict on one batch, the clean pass's: a sample's clean and adversarial verdicts share
        their draws (common random numbers, :func:`attacks.verdicts.classify_in_batch`)."""
        return model_rng_seed(self.cfg.seed, batch_ids)

    def resolve_draws(self) -> None:
        """Probe the model for randomness (:mod:`kwta_robust.randomness`) and fix the draws per verdict; a record
        resumed with other draws per verdict is stale."""
        if self.part is not None and self.part.randomness is not None:  # a shard: the driver's probe
            found = Randomness.from_dict(self.part.randomness)
        else:
            found = probe_randomness(self.model, self.x[:PROBE_INPUTS], derive_seed(self.cfg.seed, "randomness"),
                                     self.cfg.verdict_draws, self.cfg.diagnostics.thresholds.output_rtol)
        if (reason := resume_conflict(self.record, found)) is not None:
            self._stale(reason)
        self.draws, self.verdict_seeds = found.draws, self.verdict_rng if found.randomized else None
        self.record.provenance["randomness"] = found.to_dict()
        log_randomness(found)

    def clean(self) -> Tensor:
        verdict = classify_batches(self.model, self.x, self.y, draws=self.draws, batch_size=self.cfg.batch_size,
                                   ids=self.ids, rng_seed_for=self.verdict_rng)
        pred = verdict.pred
        correct = pred == self.y
        flags = [int(v) for v in correct.to(torch.int8).tolist()]
        if self.record.clean_flags and self.record.clean_flags != flags:
            self._stale("holds clean predictions that differ from this model's" + unseeded_cause(self.record))
        self.record.clean_margins = finite_or_none(verdict.margin)
        self.record.clean_error_rates = finite_or_none(verdict.error_rate) if self.draws > 1 else []
        if self.resumed_units is not None:
            logger.info("resuming %s: %d finished units kept", self.out_path, self.resumed_units)
        self.record.clean_flags = flags
        self.record.clean = Accuracy.of(int(correct.sum()), self.n)
        logger.info("clean accuracy %s%% (%d/%d)", percent_text(self.record.clean.accuracy, 2),
                    self.record.clean.correct, self.n)
        if self.save_adversarial is not None:
            self.store = AdversarialStore(self.save_adversarial, self.x, self.y, self.data.indices, pred, self.resume,
                                          record_units(self.record))
        return pred

    def probes(self) -> None:
        if self.record.probes or not self.cfg.diagnostics.enabled:
            return
        b = min(self.cfg.diagnostics.gradient_batch, self.n)
        with rng_scope(derive_seed(self.cfg.seed, "probes")):  # a randomized model: the same draws on every run
            self.record.probes = measure_model(self.model, self.x[:b], self.y[:b], self.cfg.diagnostics.thresholds)
        self.verify("the gradient/determinism probe")
        self.save()

    def detect(self, specs: Sequence[AttackSpec], strict: bool) -> None:
        """Probe the leaf modules (once; kept on resume) and resolve every BPDA attack's layers against them."""
        bpda, b = [s for s in specs if s.attack == "bpda"], min(self.cfg.diagnostics.gradient_batch, self.n)
        if self.part is not None and self.part.detection is not None:  # a part: the driver's layer probe
            self.record.detection = dict(self.part.detection)
        elif not self.record.detection and (bpda or self.cfg.diagnostics.enabled):
            self.record.detection = reusable_probe(self.checked) or detect_layers(self.model, self.x[:b],
                                                                                  seed=self.cfg.seed).to_dict()
            self.verify("the layer detection probe")
            self.save()
        elif count_relus(self.record.detection, self.model, self.x[:b], self.cfg.seed):  # kept, written before
            self.verify("the ReLU count of the layer probe")
        self.bpda_layers, self.sanity_layers, uses = plan_bpda(self.model, specs, self.cfg, self.record.detection,
                                                               strict)
        if note_straight_through(self.record.detection, self.model, self.x[:b], uses, self.cfg.seed, bpda_fields(bpda)):
            self.verify("the straight-through probe")

    def _result(self, planned: PlannedAttack, position: int, norm: str, eps: float, seed: int,
                outcome: AttackOutcome | None, flags: Tensor, cumulative: bool) -> AttackResult:
        kind_info = attack_info(planned.attack)
        robust = int((flags == 1).sum())
        return AttackResult(
            label=planned.label, attack=planned.attack, kind=kind_info.kind, single_step=kind_info.single_step,
            params=dict(planned.params) if planned.source is None else
            {"inner": self.cfg.transfer.attack, "inner_params": dict(self.cfg.transfer.params)},
            norm=norm, eps=eps, eps_text=format_eps(eps), position=position, seed=seed, cumulative=cumulative,
            robust=Accuracy.of(robust, self.n), n_attacked=int((flags >= 0).sum()), n_broken=int((flags == 0).sum()),
            flags=[int(v) for v in flags.tolist()], wall_time_s=outcome.wall_time_s if outcome else 0.0,
            violations=outcome.n_violations if outcome else 0, max_violation=outcome.max_violation if outcome else 0.0,
            queries=outcome.queries if outcome else None, source=planned.source,
            settings=self.settings.get(planned.label),  # planned_settings: what the resume check compares
            bpda_layers=None if planned.layers is None else describe_targets(self.model, planned.layers),
            margins=outcome.margins() if outcome else [], error_rates=outcome.error_rates() if outcome else [],
        )

    def threat_point(self, specs: Sequence[AttackSpec], norm: str, eps: float, eps_text: str,
                     clean_correct: Tensor) -> None:
        planned, seeds, attack_objs = threat_point_units(self.cfg, specs, norm, eps, self.sources, self.bpda_layers)
        if not planned:
            return
        threat, cumulative = ThreatModel(norm, eps), self.cfg.mode == "cascade"
        kept = kept_results(self.index, planned, seeds, norm, eps, cumulative)
        completed = {i: torch.tensor(stored.flags, dtype=torch.int8, device=self.device) for i, (p, stored)
                     in enumerate(zip(planned, kept)) if stored is not None  # not in the store: attacked again
                     and (self.store is None or self.store.has(unit_key(p.label, norm, eps)))}

        def attacks_for(i: int, batch_ids: Tensor) -> Any:
            return planned[i].build(batch_seed(seeds[i], batch_ids), self.sources, self.cfg.transfer.attack,
                                    self.cfg.transfer.params)

        def on_outcome(i: int, outcome: AttackOutcome, flags: Tensor) -> None:
            p = planned[i]
            self.verify(f"attack {p.label!r} at {threat_text(norm, eps_text)}")
            if kept[i] is not None and self.store is not None:  # finished without the store: inputs saved only
                self.store.put_again(unit_key(p.label, norm, eps), outcome, flags, kept[i].flags)
                return
            result = self._result(p, i, norm, eps, seeds[i], outcome, flags, cumulative)
            self.index.put_result(result)
            if repeat_plugin_unit(self.record, self.cfg.diagnostics.enabled and self.part is None, p.attack, lambda m: (
                    run_verified(self.model, attack_objs[i], self.x, self.y, threat, m, self.cfg.batch_size,
                                 ids=self.ids, attack_for=lambda b: attacks_for(i, b), warn_above=float("inf"),
                                 draws=self.draws, rng_seed_for=lambda b: model_rng_seed(seeds[i], b),
                                 verdict_seed_for=self.verdict_seeds, label=p.label).x_adv),
                                  outcome, self.cfg.batch_size, p.label, norm, eps, eps_text):
                self.verify(f"attack {p.label!r} at {threat_text(norm, eps_text)} (attacked again: plugin_repeats)")
            if self.store is not None:
                self.store.put(unit_key(p.label, norm, eps), outcome, flags)
            self.save()
            logger.info("%-28s %-11s robust %5s%%  (%d broken of %d attacked, %.1fs)", p.label,
                        threat_text(norm, eps_text), percent_text(result.robust.accuracy), result.n_broken,
                        result.n_attacked, result.wall_time_s)

        wc = worst_case(
            self.model, self.x, self.y, threat, attack_objs, self.cfg.mode, batch_size=self.cfg.batch_size,
            clean_correct=clean_correct, completed=completed, on_outcome=on_outcome, progress=self.progress,
            ids=self.ids, attacks_for=attacks_for, draws=self.draws, keep_inputs=False,  # on_outcome stored them
            rng_seeds_for=lambda i, ids: model_rng_seed(seeds[i], ids), verdict_seed_for=self.verdict_seeds,
            labels=[p.label for p in planned])
        worst = WorstCase(norm=norm, eps=eps, eps_text=format_eps(eps), attacks=[p.label for p in planned],
                          robust=Accuracy.of(int(wc.robust.sum()), self.n),
                          first_broken_by=[int(v) for v in wc.first_broken_by.tolist()])
        resumed_whole = self.index.worst(norm, eps) == worst and all(  # every unit kept, its worst case as stored
            r is not None and self.index.result(p.label, norm, eps) is r for p, r in zip(planned, kept))
        self.index.put_worst(worst)
        if not resumed_whole:  # else unchanged since its last save but for where the worst case sits (saved next):
            self.save()  # a resumed run saved its whole record once per threat point, time O(points x record)

    def sanity(self, clean_correct: Tensor) -> None:
        spec = self.cfg.diagnostics.sanity
        if spec is None or not self.cfg.diagnostics.enabled:
            return
        label = spec.label
        if any(r.key == (label, spec.norm, spec.eps) for r in self.record.sanity):
            return
        planned, seed = sanity_unit(self.cfg, self.sanity_layers)
        attack = planned.build(seed, {}, "", {})
        wc = worst_case(self.model, self.x, self.y, ThreatModel(spec.norm, spec.eps), [attack], "independent",
                        batch_size=self.cfg.batch_size, clean_correct=clean_correct, progress=self.progress,
                        ids=self.ids, attacks_for=lambda _, ids: planned.build(batch_seed(seed, ids), {}, "", {}),
                        draws=self.draws, rng_seeds_for=lambda _, ids: model_rng_seed(seed, ids),
                        verdict_seed_for=self.verdict_seeds, labels=[label])
        self.verify(f"sanity attack {label!r}")
        self.record.sanity.append(self._result(planned, 0, spec.norm, spec.eps, seed,
                                               wc.outcomes[0], wc.flags[0], False))
        self.save()

    def noisy_verdict(self) -> Callable[[Tensor, Tensor], Verdict] | None:
        """The noise probes' verdict: for a randomized model its plurality verdict (non-finite draws included), drawn
        as the clean pass (a noisy input's verdict differs from the clean one by the noise alone); else one pass."""
        if self.verdict_seeds is None:
            return None
        return lambda inputs, labels: classify_batches(
            self.model, inputs, labels, draws=self.draws, batch_size=self.cfg.batch_size, ids=self.ids,
            rng_seed_for=self.verdict_seeds)

    def noise(self) -> None:
        for spec in self.cfg.noise:
            if kept_noise(self.record, self.cfg, spec):
                continue
            seed = noise_seed(self.cfg.seed, spec)
            start = time.perf_counter()
            with rng_scope(derive_seed(seed, "model-rng")):  # a randomized model's own draws, seeded too
                result = run_noise_probe(self.model, self.x, self.y, kind=spec.kind, levels=list(spec.levels),
                                         draws=spec.draws, seed=seed, batch_size=self.cfg.batch_size,
                                         progress=self.progress, verdict=self.noisy_verdict(), **spec.params)
            wall = time.perf_counter() - start
            self.verify(f"noise probe {spec.kind!r}")
            self.record.noise.append(NoiseResult(spec.kind, list(spec.levels), spec.draws, seed,
                                                 result.to_dict(), wall))
            self.save()
            logger.info("noise probe %s: %s", spec.kind, result.to_dict().get("noise_score", ""))


def evaluate(model: nn.Module, data: Any, cfg: EvalConfig, model_info: Mapping[str, Any] | None = None, *,
             out_path: str | Path | None = None, resume: bool = True,
             transfer_sources: Mapping[str, nn.Module] | None = None, save_adversarial: str | Path | None = None,
             command: Sequence[str] | None = None, progress: bool = True, lock: bool = True,
             strict_bpda_layers: bool = True, layout: str = "auto", part: EvalPart | None = None,
             stale: StalePolicy = StalePolicy(), layer_probe: LayerProbe | None = None) -> EvalRecord:
    """Evaluate ``model`` on ``data`` (a whole split as ``kwta_robust.data.TensorData``) under ``cfg``.

    Args:
        model: classifier on its device (inputs ``[N, C, H, W]`` in [0, 1], logits out); left exactly as it was.
        data: the split; the runner selects ``cfg.n_examples`` samples from it (seeded permutation).
        model_info: description merged into ``record.model`` (``describe_model`` output, checkpoint sha256, label).
        out_path: JSON record path, written atomically after every finished unit (and resumed from).
        resume: keep finished units of a matching record at ``out_path`` (else start over and overwrite).
        stale: what to do with a record at ``out_path`` that cannot be resumed (:mod:`kwta_robust.resume`):
            refuse, naming ``stale.option`` (default ``--out``), or set it aside in ``superseded/``.
        transfer_sources: name → source model (same device): adds one transfer attack per source to every norm.
        save_adversarial: ``.pt`` path for clean/adversarial inputs, labels and predictions.
        command: the command line recorded as provenance (default ``sys.argv``).
        progress: tqdm bars per attack.
        strict_bpda_layers: a ``bpda_layers`` spec matching no module is an error (``compare`` relaxes it: a spec
            may name the layers of one of the compared models only).
        layout: memory layout of the run (:func:`kwta_robust.runtime.evaluation_layout`): ``"auto"`` runs the
            convolutions in channels-last on the CPU (about 2x faster forwards; the model is put back exactly as
            it was), ``"preserve"`` keeps the model's own layout (bit-identical logits to a plain forward).
            Recorded in ``provenance["layout"]``, with the torch thread count.
        part: only these steps, on these samples (:class:`~kwta_robust.eval_part.EvalPart`; sharded evaluation,
            :mod:`kwta_robust.shards`); the record is then a part to merge.
        layer_probe: :func:`~kwta_robust.detect.detect_layers` of ``model`` on the first ``diagnostics.gradient_batch``
            selected samples under ``cfg.seed``, made before (``compare``'s pre-check) in the layout it names: kept,
            not probed again, where the run is in that layout; else the BPDA pre-check probes in the run's layout,
            and the runner keeps that probe (:func:`~kwta_robust.bpda_preflight.run_precheck`).
    Returns:
        the complete :class:`EvalRecord` (also written to ``out_path``).

    ``out_path`` and ``save_adversarial`` are locked (:mod:`kwta_robust.locks`) for the whole run: a second
    evaluation writing either fails at once with :class:`~kwta_robust.locks.LockError` naming this one
    (``lock=False``: the caller holds those locks already). Running out of memory is one
    :class:`~kwta_robust.errors.EvalOutOfMemory` line naming the batch settings and ``stale``'s options; the record
    written so far stays.
    """
    save_adversarial = store_path(save_adversarial, out_path)  # a path of a file it may write, or None
    with eval_out_of_memory(stale.option, stale.restart, stale.set_aside), \
            lock_outputs({"record": out_path, "adversarial file": save_adversarial} if lock else {}):
        return _evaluate(model, data, cfg, model_info, out_path=out_path, resume=resume,
                         transfer_sources=transfer_sources, save_adversarial=save_adversarial, command=command,
                         progress=progress, strict_bpda_layers=strict_bpda_layers, layout=layout, part=part,
                         stale=stale, layer_probe=layer_probe)


@contextlib.contextmanager
def prepared_run(model: nn.Module, data: Any, cfg: EvalConfig, model_info: Mapping[str, Any] | None = None, *,
                 transfer_sources: Mapping[str, nn.Module] | None = None, layout: str = "auto") -> Iterator[Any]:
    """:func:`evaluate` up to its clean pass, with no record path (nothing read or written; ``--dry-run``:
    :mod:`kwta_robust.dry_run`): the samples selected, every model probed on them, the effective settings, every
    model in eval mode and the run's layout, the draws per verdict. Yields the runner (its ``record`` a fresh one;
    ``detect()`` resolves the BPDA layers); on exit, the models are verified left as they were."""
    runner = _Runner(model, data, cfg, model_info or {}, None, True, transfer_sources or {}, None, None, False)
    with contextlib.ExitStack() as stack, model_code_failures(model, runner.sources):
        runner.prepare(stack, layout)
        yield runner
        runner.verify("the dry run")
    runner.verify("the dry run", runner.outer)


def _evaluate(model: nn.Module, data: Any, cfg: EvalConfig, model_info: Mapping[str, Any] | None, *,
              out_path: str | Path | None, resume: bool, transfer_sources: Mapping[str, nn.Module] | None,
              save_adversarial: str | Path | None, command: Sequence[str] | None, progress: bool,
              strict_bpda_layers: bool, layout: str, part: EvalPart | None, stale: StalePolicy,
              layer_probe: LayerProbe | None) -> EvalRecord:
    """The body of :func:`evaluate` (outputs locked)."""
    runner = _Runner(model, data, cfg, model_info or {}, Path(out_path) if out_path else None, resume,
                     transfer_sources or {}, Path(save_adversarial) if save_adversarial else None, command, progress,
                     part, stale, strict_bpda_layers, layer_probe)
    whole_set, probe_only = part is None or part.whole_set, part is not None and part.layer_probe
    specs = cfg.labelled_attacks(int(runner.data.num_classes))
    with contextlib.ExitStack() as stack, model_code_failures(model, runner.sources):
        runner.prepare(stack, layout)
        clean_correct = torch.zeros(0, dtype=torch.bool) if probe_only else runner.clean() == runner.y
        runner.save()
        if whole_set:
            runner.probes()
        runner.detect(specs, strict_bpda_layers)
        for threat in cfg.threats:
            for eps, eps_text in zip(threat.epsilons, threat.eps_text):
                if part is None or part.attacks_at(threat.norm, eps):
                    runner.threat_point(specs, threat.norm, eps, eps_text, clean_correct)
        if part is None or part.sanity:
            runner.sanity(clean_correct)
        if whole_set:
            runner.noise()
        budget = [] if not cfg.diagnostics.enabled or part is not None else run_budget_check(
            model, runner.x, runner.y, runner.record, cfg.diagnostics.budget_check, cfg.diagnostics.thresholds,
            cfg.seed, cfg.batch_size, runner.bpda_layers, ids=runner.ids, kept=runner.kept_plans)
        runner.verify("the budget check")
    runner.verify("the evaluation", runner.outer)
    record = runner.record
    if cfg.diagnostics.enabled and part is None:
        record.diagnostics = sorted(run_checks(record, cfg.diagnostics.thresholds) + budget,
                                    key=lambda f: SEVERITIES.index(f.severity))
    record.status, record.provenance["finished_at"] = "complete", utc_now()  # save(): model named as probed
    runner.save()
    if part is None and runner.out_path is not None:
        drop_unmerged_parts(runner.out_path)
    return record
