"""Randomized models: is the model's verdict a draw, how many draws each verdict takes, and the expected accuracy.

A model that draws random numbers in eval mode (input noise, stochastic activations such as stochastic LWTA —
Panousis et al., ICML 2021 —, random resizing) answers each query with one draw of a random verdict. Evaluated with
one forward pass per verdict, its numbers change from run to run and the cascade keeps every lucky draw (Athalye,
Carlini & Wagner, ICML 2018, §4.2). So, before any verdict, :func:`probe_randomness` runs the model three times on
a few inputs — twice under one seed of torch's global RNG, once under another:

* the outputs differ between the seeds: the model is **randomized**, and with ``verdict_draws: auto`` every verdict
  (clean and adversarial) is the plurality of :data:`AUTO_DRAWS` draws (:mod:`attacks.verdicts`);
* they differ under the same seed: the model draws from a generator of its own (or a non-deterministic kernel),
  which the harness cannot seed — its numbers are not reproducible, and the record says so.

A deterministic model gets one forward pass per verdict, exactly as before. :func:`expected_robust_accuracy` turns
the stored per-sample error rates into the expected robust accuracy at one threat point: per sample, ``1 −`` the
largest error rate of any input the runner tried inside the ball (the clean input included), averaged over the
samples. It has two biases of opposite sign, so the direction of the net error is unknown:

* high, as every robust accuracy under attack: the attacks looked for inputs their plurality verdict gets wrong
  and stopped there, not for the input of the largest error rate in the ball;
* low: each rate is an estimate from the verdict's draws, and the largest of several noisy estimates is biased
  upward, the more so the more attack units ran (with independent draws, on inputs of a true error rate 0.3, 11
  draws and 6 units read 0.51 instead of 0.70). A sample's verdicts share their draws (common random numbers,
  :func:`attacks.verdicts.classify_in_batch`), which correlates its estimates and shrinks this bias; raising
  ``verdict_draws`` shrinks it further.

The interval printed with it covers the sampling of the samples, not these biases.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from attacks.base import eval_mode
from attacks.verdicts import global_rng
from kwta_robust.numbers import count_text

logger = logging.getLogger(__name__)

#: Draws per verdict of a randomized model under ``verdict_draws: auto`` (odd: a two-class tie cannot happen).
AUTO_DRAWS = 11
#: How many inputs the randomness probe runs on (the first of the evaluated samples).
PROBE_INPUTS = 32


@dataclass(frozen=True)
class Randomness:
    """What :func:`probe_randomness` found and the draws per verdict it resolved (``to_dict`` goes in the record's
    ``provenance.randomness``)."""

    randomized: bool
    seedable: bool
    max_output_diff: float
    draws: int

    def to_dict(self) -> dict[str, Any]:
        """``common_draws`` (randomized models only): every verdict on a batch drew as its clean pass did
        (:func:`attacks.verdicts.classify_in_batch`), which records of earlier versions did not."""
        found = {"randomized": self.randomized, "seedable": self.seedable, "max_output_diff": self.max_output_diff,
                 "draws": self.draws}
        return {**found, "common_draws": True} if self.randomized else found

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Randomness":
        """The probe's result as :meth:`to_dict` wrote it (a sharded run's parts take the driver's)."""
        return cls(bool(data["randomized"]), bool(data["seedable"]), float(data["max_output_diff"]),
                   int(data["draws"]))


def probe_randomness(model: nn.Module, x: Tensor, seed: int, setting: int | str = "auto",
                     rtol: float = 1e-5) -> Randomness:
    """Run ``model`` on ``x`` ``[B, ...]`` (eval mode, no gradients) twice under global-RNG seed ``seed`` (torch's,
    NumPy's and Python's, :func:`attacks.base.rng_scope`) and once
    under ``seed + 1``; outputs differing by more than ``rtol`` times their largest magnitude count as different.
    ``setting``: the config's ``verdict_draws``, the draws per verdict of a randomized model (``"auto"``:
    :data:`AUTO_DRAWS`); a deterministic model takes one (its draws would all agree)."""
    with eval_mode(model), torch.no_grad():
        outputs = []
        for s in (seed, seed, seed + 1):
            with global_rng(s):
                outputs.append(model(x))
    finite = outputs[0].isfinite()
    scale = max(float(outputs[0][finite].abs().max()), 1e-12) if bool(finite.any()) else 1.0
    same_seed, other_seed = (_largest_difference(outputs[0], other) for other in outputs[1:])
    randomized = max(same_seed, other_seed) > rtol * scale
    draws = 1 if not randomized else AUTO_DRAWS if setting == "auto" else int(setting)
    return Randomness(randomized, same_seed <= rtol * scale, max(same_seed, other_seed), draws)


def _largest_difference(a: Tensor, b: Tensor) -> float:
    """The largest ``|a − b|`` over the entries finite in both; entries non-finite in one and not equal in the
    other (NaN against a number, ``inf`` against ``−inf``) count as the largest float: always finite, for the
    record."""
    finite = a.isfinite() & b.isfinite()
    same = (a == b) | (a.isnan() & b.isnan())
    if bool((~finite & ~same).any()):
        return torch.finfo(torch.float64).max
    return float((a - b)[finite].abs().max()) if bool(finite.any()) else 0.0


def expected_robust_accuracy(clean_error_rates: list[float | None],
                             unit_error_rates: list[list[float | None]]) -> tuple[float, float] | None:
    """Expected robust accuracy and its standard error over the samples, from the clean inputs' error rates and
    those of every attack unit at one threat point (``None`` where a unit did not attack a sample); ``None`` when
    the record has no error rates (one draw per verdict)."""
    n = len(clean_error_rates)
    if n == 0 or any(len(rates) != n for rates in unit_error_rates):
        return None
    worst = []
    for i, clean in enumerate(clean_error_rates):
        rates = [r[i] for r in unit_error_rates if r[i] is not None]
        worst.append(max([1.0 if clean is None else clean, *rates]))
    correct = [1.0 - w for w in worst]
    mean = sum(correct) / n
    se = math.sqrt(sum((c - mean) ** 2 for c in correct) / (n - 1) / n) if n > 1 else 0.0
    return mean, se


def log_randomness(found: Randomness) -> None:
    """Say what the probe found: nothing for a deterministic model; the draws per verdict for a randomized one; a
    warning where its numbers cannot be reproduced or each verdict is one draw."""
    if not found.randomized:
        return
    if not found.seedable:
        logger.warning("the model's outputs differ under the same seed of the global RNGs (torch's, NumPy's, "
                       "Python's; by up to %.3g): it draws from a generator of its own or runs non-deterministic "
                       "kernels, which the harness cannot seed; its numbers can differ from run to run",
                       found.max_output_diff)
    if found.draws == 1:
        logger.warning("the model is randomized and verdict_draws is 1: every clean and adversarial verdict is one "
                       "draw of its randomness; set verdict_draws: auto (%d draws) or more", AUTO_DRAWS)
    else:
        logger.info("the model is randomized (outputs differ by up to %.3g between seeds): every verdict is the "
                    "plurality of %d draws (verdict_draws)", found.max_output_diff, found.draws)


#: Why a randomized model's record written before its verdicts shared the clean pass's draws is stale.
DREW_AFRESH = "holds verdicts that drew afresh, before every verdict shared the clean pass's draws"


def resume_conflict(record: Any, found: Randomness) -> str | None:
    """Why an evaluation record that already holds verdicts cannot be continued with ``found``'s draws per verdict
    (completing "PATH ..."), or ``None``: other draws, or plurality verdicts written before they shared the clean
    pass's draws (a record mixing both would not be what its config reproduces)."""
    if not (record.clean_flags or record.results):
        return None
    earlier = record_draws(record)
    if earlier != found.draws:
        return f"took {count_text(earlier, 'draw')} per verdict and this run takes {found.draws} (verdict_draws)"
    if found.randomized and not _recorded(record, "common_draws"):
        return DREW_AFRESH
    return None


def unseeded_cause(record: Any) -> str:
    """Why a resumed record's clean verdicts can differ from this run's, completing "... differ from this model's":
    the probe found randomness the harness cannot seed (``provenance.randomness.seedable`` false), or ``""``."""
    found = record.provenance.get("randomness")
    if not (isinstance(found, dict) and found.get("randomized") and not found.get("seedable", True)):
        return ""
    return (" (the model draws from a generator the harness cannot seed, such as a torch.Generator of its own, "
            "so no two runs agree: draw from torch's, NumPy's or Python's global RNG to make its records resumable)")


def drew_afresh(record: Any) -> bool:
    """The record is a randomized model's whose verdicts drew afresh, written before they shared the clean pass's
    draws (no ``provenance.randomness.common_draws``): stale for a run of today's code (:data:`DREW_AFRESH`)."""
    return record_randomized(record) and not _recorded(record, "common_draws")


def record_randomized(record: Any) -> bool:
    """The randomness probe found the record's model randomized (``provenance.randomness.randomized``)."""
    return _recorded(record, "randomized")


def _recorded(record: Any, key: str) -> bool:
    """``provenance.randomness[key]`` of an evaluation record, ``False`` where it is missing."""
    found = record.provenance.get("randomness")
    return isinstance(found, dict) and bool(found.get(key))


def record_draws(record: Any) -> int:
    """The draws per verdict an evaluation record was written with (``provenance.randomness.draws``; 1 in records
    written before randomized models were probed)."""
    found = record.provenance.get("randomness")
    return int(found.get("draws", 1)) if isinstance(found, dict) else 1
