"""Per-step temperatures of BPDA's smooth surrogate: one temperature-schedule entry, and the hook that applies it.

BPDA (Athalye, Carlini & Wagner, ICML 2018) with the smooth relaxation of a top-k gate (kWTA: Xiao et al., ICLR 2020;
broken by Tramèr et al., NeurIPS 2020, with gradient estimation over Gaussian noise) differentiates
``x · sigmoid((x - t_k) / (T · std))`` at a temperature ``T``. A stage of :class:`attacks.bpda.BPDA` may hold ``T``
fixed, cycle a list of temperatures or draw ``T`` log-uniformly (seeded) at every gradient evaluation of its inner
attack — an expectation over surrogates, for a model whose hard samples need different temperatures. The forward
values stay exact; only the backward changes.
Threat model and shapes: the inner attack's (nothing here touches the inputs).

Example (a stage entry as written in ``temperature_schedule``)::

    stage_temperature({"log_uniform": [0.02, 0.1]}, schedule)   # (0.0447..., StepTemperature("log-uniform", ...))
    with per_step_temperature(model, switched_layers, step_temperature, seed=0):
        x_adv = inner_attack(model, x, y, threat)
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from attacks.base import AttackConfigError, seeded_generator
from attacks.bpda_protocol import set_temperature
from attacks.errors import FLOAT32_RANGE, in_float32_range, is_finite_number


@dataclass(frozen=True)
class StepTemperature:
    """A stage's smooth-surrogate temperature that changes per gradient evaluation of the inner attack.

    ``kind="cycle"``: ``values[i % len(values)]`` at the ``i``-th gradient evaluation; ``kind="log-uniform"``: a
    seeded draw ``exp(U(log lo, log hi))`` per gradient evaluation (``values == (lo, hi)``) — an expectation over
    surrogates (the forward pass stays exact; only the backward relaxation changes).
    """

    kind: str
    values: tuple[float, ...]

    def sampler(self, seed: int) -> Callable[[int], float]:
        """``i -> temperature`` for the ``i``-th gradient evaluation (draws reproducible for ``seed``)."""
        if self.kind == "cycle":
            return lambda i: self.values[i % len(self.values)]
        generator = seeded_generator(seed, "cpu")
        log_lo, log_hi = math.log(self.values[0]), math.log(self.values[1])
        return lambda i: math.exp(log_lo + (log_hi - log_lo) * float(torch.rand((), generator=generator)))


def _positive(value: Any) -> bool:
    """A finite temperature > 0 in float32's range (at T = inf the relaxation is flat: no gradient; 1e-300 is 0 in
    the float32 relaxation, a division by zero: NaN gradients)."""
    return is_finite_number(value) and value > 0 and in_float32_range(value)


def stage_temperature(entry: Any, schedule: Any) -> tuple[float, StepTemperature | None]:
    """One ``temperature_schedule`` entry → (the stage's first temperature, its per-step change or ``None``).

    An entry is a temperature ``T``; a list ``[T1, T2, ...]`` (cycled per gradient evaluation); or
    ``{"log_uniform": [lo, hi]}`` (a seeded log-uniform draw per gradient evaluation)."""
    fix = (f"temperature_schedule: each entry is a temperature > 0 {FLOAT32_RANGE}, a list of them (cycled per "
           f"step) or {{log_uniform: [lo, hi]}} with 0 < lo < hi; got {schedule!r}")
    if _positive(entry):
        return float(entry), None
    if isinstance(entry, (list, tuple)) and entry and all(_positive(t) for t in entry):
        values = tuple(float(t) for t in entry)
        return values[0], (StepTemperature("cycle", values) if len(values) > 1 else None)
    if isinstance(entry, Mapping) and set(entry) == {"log_uniform"}:
        bounds = entry["log_uniform"]
        if isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(_positive(t) for t in bounds) \
                and bounds[0] < bounds[1]:
            lo, hi = float(bounds[0]), float(bounds[1])
            return math.sqrt(lo * hi), StepTemperature("log-uniform", (lo, hi))
    raise AttackConfigError(fix)


@contextlib.contextmanager
def per_step_temperature(
    model: nn.Module, switched: Mapping[str, nn.Module], steps: StepTemperature | None, seed: int
) -> Iterator[None]:
    """Inside the block, set the switched layers' temperature before every gradient-enabled forward of ``model``
    (one per gradient evaluation of the inner attack, and one for any other forward it runs with gradients on, such
    as PGD's check of its last iterate); forwards under ``no_grad`` (exact values only) are not counted. The hook
    is removed afterwards."""
    if steps is None or not switched:
        yield
        return
    temperature_at = steps.sampler(seed)
    evaluations = [0]

    def before_forward(module: nn.Module, args: Any) -> None:
        if torch.is_grad_enabled():
            set_temperature(switched, temperature_at(evaluations[0]))
            evaluations[0] += 1

    handle = model.register_forward_pre_hook(before_forward)
    try:
        yield
    finally:
        handle.remove()
