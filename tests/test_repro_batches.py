"""Reproducibility audit: what another ``batch_size`` or more samples leave as it was (README, "Reproducing a
record"). The noise probes draw per sample, so their per-sample results do not depend on the batch size; an attack,
and a randomized model's clean pass, draw per batch from the ids of the batch's samples
(:func:`kwta_robust.attack_plan.model_rng_seed`), so a sample's result does not depend on the batches after it
(``n_examples`` grown in whole batches). A randomized model's clean pass does depend on the batch size (another
batch, other draws), so batch-size invariance of the clean pass is no property to pin."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kwta_robust.api import evaluate_model
from kwta_robust.results import EvalRecord
from tests.test_reproducibility import CONFIG, Stateful, toy_data

NOISE = [{"kind": "numenta", "levels": [0.0, 0.3], "draws": 1},
         {"kind": "gaussian", "levels": [0.1, 0.3], "draws": 2},
         {"kind": "salt-and-pepper", "levels": [0.2], "draws": 2}]
SUITE = {**CONFIG, "mode": "independent", "noise": NOISE,
         "attacks": [{"attack": "pgd", "params": {"steps": 3}},  # random start: one draw per batch
                     {"attack": "square", "params": {"n_queries": 10}}]}


class NoisyStateful(Stateful):
    """:class:`Stateful` with Gaussian input noise from torch's global RNG in every forward (eval mode too): a
    randomized model, whose clean pass draws under the seed of each batch."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x + 0.5 * torch.randn_like(x))


def run(n: int, batch_size: int, model: type[Stateful] = Stateful, config: dict = SUITE) -> EvalRecord:
    """``n_examples: n`` of 16 inputs: the first ``n`` of one seeded permutation of them."""
    x, y = toy_data(16)
    return evaluate_model(model().eval(), {**config, "n_examples": n, "batch_size": batch_size}, x, y, threads=1)


def per_sample_noise(record: EvalRecord, n: int) -> list[Any]:
    """Each probe's per-level, per-sample count of correct draws, cut to the first ``n`` samples."""
    return [[counts[:n] for counts in probe.result["correct_counts"]] for probe in record.noise]


def test_the_noise_probes_do_not_depend_on_the_batch_size() -> None:
    small, whole = run(16, 4), run(16, 16)
    assert small.config_hash != whole.config_hash  # another evaluation, by the record's own identity
    assert per_sample_noise(small, 16) == per_sample_noise(whole, 16)
    assert [p.result["accuracy"] for p in small.noise] == [p.result["accuracy"] for p in whole.noise]


def test_the_first_batches_results_do_not_depend_on_the_batches_after_them() -> None:
    """8 samples are the first two batches of 4 that 16 samples evaluate: every attack's flags and margins there,
    and every noise draw, are the same (schema 3 seeds a batch from its samples' ids)."""
    few, more = run(8, 4), run(16, 4)
    assert few.dataset["indices"] == more.dataset["indices"][:8]
    for label in ("pgd", "square"):
        a, b = few.result(label, "linf", 0.1), more.result(label, "linf", 0.1)
        assert a is not None and b is not None and a.seed == b.seed
        assert any(margin is not None for margin in a.margins)  # some samples attacked: margins that can differ
        assert (a.flags, a.margins) == (b.flags[:8], b.margins[:8])
    assert per_sample_noise(few, 8) == per_sample_noise(more, 8)


def test_a_randomized_models_clean_pass_of_the_first_batches_does_not_depend_on_the_batches_after_them() -> None:
    """Its clean pass draws under each batch's seed (from the batch's sample ids): the 8 samples of the first two
    batches of 4 get the same draws, so the same verdicts, margins and error rates, whether 8 or 16 are evaluated."""
    config = {**CONFIG, "attacks": [{"attack": "fgsm"}]}
    few, more = run(8, 4, NoisyStateful, config), run(16, 4, NoisyStateful, config)
    assert few.provenance["randomness"]["randomized"] and few.provenance["randomness"]["seedable"]
    assert len(set(few.clean_error_rates)) > 1  # the draws disagree on some samples: rates other seeds would move
    assert few.clean_flags == more.clean_flags[:8] and few.clean_margins == more.clean_margins[:8]
    assert few.clean_error_rates == more.clean_error_rates[:8]
