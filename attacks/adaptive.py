"""Adaptive attacks for gradient-masking defenses: gradient estimation over Gaussian noise, and EOT.

``gradient-estimation`` — the attack Tramèr, Carlini, Brendel & Madry ("On Adaptive Attacks to Adversarial Example
Defenses", NeurIPS 2020, §"k-Winners-Take-All") used to break kWTA (Xiao et al., ICLR 2020): kWTA's exact gradient
is uninformative (the network is highly discontinuous in its input), so the attack ignores it and estimates the
gradient of a *Gaussian-smoothed* margin loss by antithetic finite differences (Ilyas et al., "Black-box
Adversarial Attacks with Limited Queries and Information", ICML 2018, NES):

    ĝ(x) = 1/(2σn) Σ_{i=1..n} (L(x + σu_i) - L(x - σu_i)) u_i,      u_i ~ N(0, I),

with ``L`` the margin ``max_{j≠y} z_j - z_y``, ``n`` growing linearly from ``samples_start`` to ``samples_end`` over
the iterations (coarse early, precise late; or in stages, ``samples_schedule``), then a signed step (Linf) or a
normalised step (L2), projected onto the threat model. Samples stop being updated — and queried — as soon as they are
misclassified. It uses only the model's outputs (no backward pass), so gradient masking cannot hide from it.

``eot`` — Expectation over Transformation (Athalye, Engstrom, Ilyas & Kwok, "Synthesizing Robust Adversarial
Examples", ICML 2018; Athalye, Carlini & Wagner, ICML 2018, §4.2): PGD whose gradient is the average over
``eot_samples`` forward/backward passes, for randomized models (dropout or noise kept active at inference).

Threat models: Linf and L2, white-box (``eot``) or score-based (``gradient-estimation``). Shapes: ``x`` ``[N, ...]``
in ``threat.bounds``, ``y`` ``[N]`` → ``x_adv`` ``[N, ...]`` on ``x.device``. All randomness comes from explicit
generators seeded from ``seed``; a randomized model's own noise is drawn inside ``torch.random.fork_rng`` seeded
from ``seed``, so the caller's global RNG state is untouched.

Example::

    ge = create_attack("gradient-estimation", steps=100, samples_start=20, samples_end=200)
    x_adv = ge(model, x, y, ThreatModel("linf", 0.1))
    ge.last_queries          # [N] model evaluations spent per sample
    eot = create_attack("eot", steps=40, eot_samples=10)
"""

from __future__ import annotations

import logging
import math
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import (
    NORMS,
    AttackConfigError,
    ThreatModel,
    begin_attack,
    eval_mode,
    frozen_parameters,
    input_gradient,
    margin_loss,
    register_attack,
    rng_scope,
    seeded_generator,
)
from attacks.errors import FLOAT32_RANGE, check_bool_param, check_count, in_float32_range, is_finite_number
from attacks.precision import loss_logits
from attacks.seed_draws import MODEL_NOISE, RANDOM_START

logger = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor], Tensor]


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(loss_logits(logits), y, reduction="none")  # float16 logits: in float32


LOSSES: Mapping[str, LossFn] = MappingProxyType({"margin": margin_loss, "ce": _cross_entropy})
"""Per-sample losses to *maximise*: ``[N, C], [N] → [N]``."""


def _check_loss(loss: str) -> LossFn:
    if loss not in LOSSES:
        raise AttackConfigError(f"loss: unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
    return LOSSES[loss]


def _positive_or_none(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if not (is_finite_number(value) and value > 0):
        raise AttackConfigError(f"{name}: must be a number > 0 (or omitted for the default), got {value!r}")
    if not in_float32_range(value):  # 1e-300 is 0 in float32 (probes x ± 0·u: a zero estimate, no attack)
        raise AttackConfigError(f"{name}: must be a number > 0 {FLOAT32_RANGE} (or omitted for the default), "
                                f"got {value!r}")
    return float(value)


#: Forward batch of gradient estimation on CPU when ``forward_batch_size`` is not given: per input, the small CNN's
#: forward is ~25% cheaper in batches of 64-512 than of 4,096 (its activations stay in the cache, and its buffers
#: stay below glibc's 32 MiB mmap threshold instead of being mapped and page-faulted in on every call).
CPU_FORWARD_BATCH = 256


def balanced_chunks(inputs: Tensor, batch_size: int) -> tuple[Tensor, ...]:
    """``inputs`` ``[B, ...]`` split into ``ceil(B / batch_size)`` chunks of (nearly) equal size.

    Unlike ``Tensor.split`` this leaves no small tail: a forward of fewer than ~64 inputs may use other kernels
    (on CPU its logits can then differ from a larger batch's in the last bit), so equal chunks keep the logits
    the same whatever the chunk size, as long as chunks hold at least that many inputs."""
    return inputs.tensor_split(max(1, -(-inputs.shape[0] // batch_size)))


def _logits_batched(model: nn.Module, inputs: Tensor, batch_size: int) -> Tensor:
    chunks = balanced_chunks(inputs, batch_size)
    return model(chunks[0]) if len(chunks) == 1 else torch.cat([model(chunk) for chunk in chunks])


def sample_schedule(start: int, end: int, steps: int) -> list[int]:
    """Noise samples per iteration, linear from ``start`` to ``end`` over ``steps`` iterations."""
    if steps == 1:
        return [end]
    return [int(round(start + (end - start) * t / (steps - 1))) for t in range(steps)]


def staged_schedule(stages: Sequence[Sequence[int]], steps: int) -> list[int]:
    """Noise samples per iteration from ``[[until, n], ...]``: ``n`` pairs for the iterations before ``until`` (the
    last stage's ``n`` for any iteration past the last ``until``), e.g. Tramèr et al.'s ``[[20, 50], [40, 500],
    [100, 10000]]``."""
    out = []
    for t in range(steps):
        later = [n for until, n in stages if t < until]
        out.append(later[0] if later else stages[-1][1])
    return out


def _check_stages(stages: Sequence[Sequence[int]] | None) -> list[list[int]] | None:
    if stages is None:
        return None
    where = "samples_schedule"
    if not isinstance(stages, (list, tuple)) or not stages:
        raise AttackConfigError(f"{where}: give a list of [until_iteration, pairs] stages, e.g. [[20, 50], [100, 500]]")
    out = []
    for stage in stages:
        if not isinstance(stage, (list, tuple)) or len(stage) != 2:
            raise AttackConfigError(f"{where}: each stage is [until_iteration, pairs], got {stage!r}")
        out.append([check_count(f"{where} until_iteration", stage[0]), check_count(f"{where} pairs", stage[1])])
    if any(a[0] >= b[0] for a, b in zip(out, out[1:])):
        raise AttackConfigError(f"{where}: until_iteration must increase from stage to stage, got {stages!r}")
    return out


def estimate_gradient(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    samples: int,
    sigma: float,
    generator: torch.Generator,
    query_batch_size: int,
    forward_batch_size: int | None = None,
) -> Tensor:
    """Antithetic Gaussian finite-difference gradient of ``loss_fn(model(.), y)`` at ``x``: ``[A, ...] → [A, ...]``.

    Spends ``2 · samples`` model evaluations per row of ``x``. The noise is drawn in chunks of
    ``query_batch_size // (2A)`` pairs for all rows at once (a Python loop over chunks, never over rows); each
    chunk's probes go through the model in balanced batches of at most ``forward_batch_size`` inputs (default:
    ``query_batch_size``, a whole chunk unless one pair per row already exceeds it). The forward batch changes only
    the speed: the noise, the summation and hence the estimate depend on ``query_batch_size`` alone.
    """
    rows = x.shape[0]
    grad = torch.zeros_like(x)
    per_chunk = max(1, query_batch_size // (2 * rows))
    forward_batch = forward_batch_size or query_batch_size
    done = 0
    while done < samples:
        m = min(per_chunk, samples - done)
        u = torch.randn((m,) + tuple(x.shape), generator=generator, device=x.device, dtype=x.dtype)
        probes = torch.cat([x.unsqueeze(0) + sigma * u, x.unsqueeze(0) - sigma * u]).flatten(0, 1)
        losses = loss_fn(_logits_batched(model, probes, forward_batch), y.repeat(2 * m)).view(2, m, rows)
        diff = (losses[0] - losses[1]).view((m, rows) + (1,) * (x.ndim - 1))
        grad += (diff * u).sum(dim=0)
        done += m
    return grad / (2.0 * sigma * samples)


def estimation_draw(params: Mapping[str, object]) -> str:
    """What gradient estimation draws first from its seed (:mod:`attacks.seed_draws`): its random start where
    ``random_start`` is true, else its first Gaussian probes ``torch.randn((m,) + x.shape)`` (in L2 the numbers of a
    random start's direction of that seed; a declaration does not see the norm, and the Linf start differs)."""
    return RANDOM_START if params.get("random_start") is True else "Gaussian probes"


def eot_draw(params: Mapping[str, object]) -> str:
    """What EOT draws first from its seed (:mod:`attacks.seed_draws`): its random start, else (``random_start``
    false: its own generator draws nothing) a randomized model's noise from the global generators it seeds."""
    return MODEL_NOISE if params.get("random_start") is False else RANDOM_START


@register_attack("gradient-estimation", kind="adaptive", uses_gradient=False, draws=estimation_draw)
class GradientEstimation:
    """Gradient estimation over Gaussian noise (Tramèr et al., NeurIPS 2020, §kWTA) — see the module docstring.

    Parameters:

    * ``steps`` (100): iterations.
    * ``samples_start`` (20), ``samples_end`` (200): antithetic noise pairs per iteration, linear schedule.
    * ``samples_schedule``: stages ``[[until_iteration, pairs], ...]`` instead of the linear schedule
      (:func:`staged_schedule`).
    * ``sigma``: smoothing scale per input coordinate. Default: ``eps`` for Linf (each noise coordinate on the
      scale of the allowed perturbation) and ``eps / sqrt(D)`` for L2 (``||σu||_2 ≈ eps``). Probes are not clipped
      to the bounds (clipping would break the antithetic symmetry); only the iterates are projected.
    * ``step_size``: default ``2.5 · eps / steps`` for Linf (the common rule of thumb: enough to cross the
      ball); for L2 that divided by ``sqrt(min(1, 2n / D))`` (``n`` the mean noise pairs per iteration), the
      expected cosine of an n-pair estimate with the gradient: a normalised L2 step along a noisy estimate advances
      only that fraction of its length, so that rule reached about half the ball (mean L2 distance 0.52 at eps 1
      on an mnist5k CNN).
    * ``loss`` (``"margin"`` | ``"ce"``), ``random_start`` (False), ``seed``.
    * ``query_batch_size`` (4096): noise probes drawn (and held in memory) at a time; it sets how the noise of an
      iteration is chunked, hence the float summation of the estimate.
    * ``forward_batch_size``: inputs per model call, a pure speed setting (the logits, hence the results, are the
      same). Default: ``min(256, query_batch_size)`` on CPU (:data:`CPU_FORWARD_BATCH`, cache-sized),
      ``query_batch_size`` on other devices; a given value is capped at ``query_batch_size``.

    After a call: ``last_queries`` (``[N]`` int64 model evaluations per sample, on ``x.device``: 1 for the initial
    check (2 with ``random_start``), then ``2n + 1`` per iteration while the sample is still classified correctly) and
    ``last_total_queries``.

    Threat model: Linf or L2, score-based (logits only). ``x`` ``[N, ...]``, ``y`` ``[N]`` → ``[N, ...]``; returns
    per sample the first misclassified iterate, else the one with the largest margin.

    Example::

        attack = create_attack("gradient-estimation", steps=100, samples_start=20, samples_end=200)
        x_adv = attack(kwta_model, x, y, ThreatModel("linf", "8/255"))
    """

    #: What the parameters left ``None`` run (records: :mod:`attacks.settings`; see :meth:`default_sigma`,
    #: :meth:`default_step` and :meth:`forward_batch`); alternatives joined by "or", as a protocol table separates
    #: settings by commas.
    setting_rules: Mapping[str, str] = MappingProxyType({
        "sigma": "eps (linf) or eps/sqrt(D) (l2)",
        "step_size": "2.5*eps/steps (linf) or that / sqrt(min(1, 2*mean pairs/D)) (l2)",
        "forward_batch_size": f"min({CPU_FORWARD_BATCH}, query_batch_size) on CPU or query_batch_size elsewhere",
    })

    def __init__(
        self,
        steps: int = 100,
        samples_start: int = 20,
        samples_end: int = 200,
        samples_schedule: Sequence[Sequence[int]] | None = None,
        sigma: float | None = None,
        step_size: float | None = None,
        loss: str = "margin",
        random_start: bool = False,
        query_batch_size: int = 4096,
        seed: int = 0,
        forward_batch_size: int | None = None,
    ) -> None:
        self.steps = check_count("steps", steps)
        self.samples_start = check_count("samples_start", samples_start)
        self.samples_end = check_count("samples_end", samples_end)
        self.samples_schedule = _check_stages(samples_schedule)
        self.sigma = _positive_or_none("sigma", sigma)
        self.step_size = _positive_or_none("step_size", step_size)
        self.loss_fn = _check_loss(loss)
        self.loss = loss
        self.random_start = check_bool_param("gradient-estimation", "random_start", random_start)
        self.query_batch_size = check_count("query_batch_size", query_batch_size)
        if self.query_batch_size < 2:
            raise AttackConfigError("query_batch_size: must be >= 2 (one antithetic pair)")
        self.forward_batch_size = None if forward_batch_size is None else check_count(
            "forward_batch_size", forward_batch_size)
        self.seed = int(seed)
        self.name = "gradient-estimation" if loss == "margin" else f"gradient-estimation-{loss}"
        self.last_queries: Tensor | None = None
        self.last_total_queries = 0

    def default_sigma(self, x: Tensor, threat: ThreatModel) -> float:
        if threat.norm == "linf":
            return threat.eps
        return threat.eps / math.sqrt(x[0].numel())

    def default_step(self, x: Tensor, threat: ThreatModel, schedule: Sequence[int]) -> float:
        """The step size when ``step_size`` is not given (see the class docstring)."""
        step = 2.5 * threat.eps / self.steps
        if threat.norm == "linf":
            return step
        mean_pairs = sum(schedule) / max(len(schedule), 1)
        return step / math.sqrt(min(1.0, 2 * mean_pairs / max(x[0].numel(), 1)))

    def forward_batch(self, device: torch.device) -> int:
        """Inputs per model call on ``device`` (see ``forward_batch_size``)."""
        if self.forward_batch_size is not None:
            return min(self.forward_batch_size, self.query_batch_size)
        return min(CPU_FORWARD_BATCH, self.query_batch_size) if device.type == "cpu" else self.query_batch_size

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        # a randomized model draws from the global RNG: fork it (seeded) so the caller's state is untouched
        with rng_scope(self.seed):
            return self._attack(model, x, y, threat)

    def _attack(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        clean_logits = begin_attack(self.name, NORMS, model, x, y, threat)
        gen = seeded_generator(self.seed, x.device)
        sigma = self.sigma if self.sigma is not None else self.default_sigma(x, threat)
        if self.samples_schedule is not None:
            schedule = staged_schedule(self.samples_schedule, self.steps)
        else:
            schedule = sample_schedule(self.samples_start, self.samples_end, self.steps)
        step = self.step_size if self.step_size is not None else self.default_step(x, threat, schedule)
        queries = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        forward_batch = self.forward_batch(x.device)
        if threat.eps == 0 or x.shape[0] == 0:  # only the entry check queried the model
            self.last_queries = queries + 1
            self.last_total_queries = int(self.last_queries.sum())
            return x.clone()
        with eval_mode(model), torch.no_grad():
            if self.random_start:
                x_adv = threat.random_start(x, gen)
                margin = margin_loss(_logits_batched(model, x_adv, forward_batch), y)
            else:
                x_adv, margin = x.clone(), margin_loss(clean_logits, y)
            queries += 2 if self.random_start else 1  # the entry check (and the random start's evaluation)
            best, best_margin = x_adv.clone(), margin.clone()
            done = margin > 0
            for n in schedule:
                active = (~done).nonzero().squeeze(1)
                if active.numel() == 0:
                    break
                xa, ya = x_adv[active], y[active]
                grad = estimate_gradient(model, xa, ya, self.loss_fn, n, sigma, gen, self.query_batch_size,
                                         forward_batch)
                x_new = threat.project(xa + step * threat.direction(grad), x[active])
                margin = margin_loss(_logits_batched(model, x_new, forward_batch), ya)
                queries[active] += 2 * n + 1
                x_adv[active] = x_new
                # by the indices of the batch and torch.where, not boolean masks: the step's one host read (on an
                # accelerator a synchronisation) is the nonzero above, whose batch shrinks as samples break
                improved = margin > best_margin[active]
                best[active] = torch.where(improved.view((-1,) + (1,) * (x_new.ndim - 1)), x_new, best[active])
                best_margin[active] = torch.where(improved, margin, best_margin[active])
                done[active] = done[active] | (margin > 0)
        self.last_queries = queries
        self.last_total_queries = int(queries.sum())
        logger.debug(
            "%s: %d/%d misclassified, %d queries", self.name, int(done.sum()), len(done), self.last_total_queries
        )
        return best


class EOTGradient:
    """Expectation-over-Transformation gradient: the average of ``samples`` forward/backward passes.

    ``__call__(model, x, y) -> (grad [N, ...], mean loss [N], mean margin [N])``. The ``samples`` replicas of the
    batch go through the model in chunks of whole replicas, as many as fit in ``batch_size`` rows and at least one
    (so a batch of more than ``batch_size`` rows goes through one replica at a time: the runner's ``batch_size``
    bounds it); each replica draws the model's own randomness independently. ``samples=1`` is the ordinary
    gradient.
    """

    def __init__(self, loss_fn: LossFn, samples: int, batch_size: int) -> None:
        self.loss_fn = loss_fn
        self.samples = samples
        self.batch_size = batch_size

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        rows = x.shape[0]
        per_chunk = max(1, self.batch_size // max(rows, 1))
        grad = torch.zeros_like(x)
        loss_sum = torch.zeros(rows, device=x.device, dtype=x.dtype)
        margin_sum = torch.zeros(rows, device=x.device, dtype=x.dtype)
        done = 0
        while done < self.samples:
            m = min(per_chunk, self.samples - done)
            xr = x.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xr.repeat((m,) + (1,) * (x.ndim - 1)))
                yr = y.repeat(m)
                loss = self.loss_fn(logits, yr)
                g = input_gradient(loss.sum(), xr)
            grad += g
            loss_sum += loss.detach().view(m, rows).sum(0)
            margin_sum += margin_loss(logits.detach(), yr).view(m, rows).sum(0)
            done += m
        return grad / self.samples, loss_sum / self.samples, margin_sum / self.samples


@register_attack("eot", kind="adaptive", uses_gradient=True, draws=eot_draw)
class EOT:
    """PGD with an Expectation-over-Transformation gradient (Athalye et al., ICML 2018) for randomized models.

    Parameters: ``steps`` (40), ``eot_samples`` (10 forward/backward passes per gradient), ``loss``
    (``"ce"`` | ``"margin"``), ``step_size`` (default ``2.5 · eps / steps``), ``random_start`` (True: uniform in the
    ball), ``eot_batch_size`` (rows per forward, 4096, in whole replicas of the batch), ``seed`` (random start and
    the model's own randomness).

    Returns, per sample, the iterate with the largest expected margin (averaged over ``eot_samples`` passes) —
    for a randomized model "misclassified" is itself random, so the attack keeps the point that is misclassified
    most reliably.

    Threat model: Linf or L2, white-box. ``x`` ``[N, ...]``, ``y`` ``[N]`` → ``[N, ...]``.

    Example::

        attack = create_attack("eot", steps=40, eot_samples=10, loss="margin")
        x_adv = attack(randomized_model, x, y, ThreatModel("l2", 0.5))
    """

    #: What ``step_size=None`` runs (records: :mod:`attacks.settings`).
    setting_rules: Mapping[str, str] = MappingProxyType({"step_size": "2.5*eps/steps"})

    def __init__(
        self,
        steps: int = 40,
        eot_samples: int = 10,
        loss: str = "ce",
        step_size: float | None = None,
        random_start: bool = True,
        eot_batch_size: int = 4096,
        seed: int = 0,
    ) -> None:
        self.steps = check_count("steps", steps)
        self.gradient = EOTGradient(_check_loss(loss), check_count("eot_samples", eot_samples),
                                    check_count("eot_batch_size", eot_batch_size))
        self.loss = loss
        self.step_size = _positive_or_none("step_size", step_size)
        self.random_start = check_bool_param("eot", "random_start", random_start)
        self.seed = int(seed)
        self.name = f"eot-pgd({eot_samples})"

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        # the model's own randomness is drawn from the global RNG, forked and seeded here
        with rng_scope(self.seed):
            return self._attack(model, x, y, threat)

    def _attack(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        begin_attack(self.name, NORMS, model, x, y, threat)
        if threat.eps == 0 or x.shape[0] == 0:
            return x.clone()
        gen = seeded_generator(self.seed, x.device)
        step = self.step_size if self.step_size is not None else 2.5 * threat.eps / self.steps
        with eval_mode(model), frozen_parameters(model):
            x_adv = threat.random_start(x, gen) if self.random_start else x.clone()
            best = x_adv.clone()
            best_margin = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
            for i in range(self.steps + 1):
                grad, _, margin = self.gradient(model, x_adv, y)
                improved = margin > best_margin
                best[improved] = x_adv[improved]
                best_margin[improved] = margin[improved]
                if i == self.steps:
                    break
                x_adv = threat.project(x_adv + step * threat.direction(grad), x)
        return best.detach()
