"""Reproducibility audit: what an evaluation leaves as it was (non-persistent buffers, gradients, the global RNGs),
transfer seeds that do not depend on how many models are compared, resumed results of another seed, and noise
that does not depend on how many samples follow."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from attacks.noise import create_noise_probe
from kwta_robust.api import compare_models_in_memory, evaluate_model
from kwta_robust.evaluate import ModelChangedError
from kwta_robust.layers import KWTA
from kwta_robust.results import Accuracy
from kwta_robust.snapshot import ModelSnapshot

CONFIG = {"dataset": "toy", "batch_size": 8, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
          "attacks": [{"attack": "pgd", "params": {"steps": 5}}], "diagnostics": {"enabled": False}}


class Stateful(nn.Module):
    """BatchNorm (running stats) + boosted kWTA (duty cycles) + a non-persistent buffer: state that must not move."""

    def __init__(self, seed: int = 0, count_calls: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(20, 16)
        self.bn = nn.BatchNorm1d(16)
        self.act = KWTA(ratio=0.5, boost_strength=1.0, num_units=16)
        self.fc2 = nn.Linear(16, 3)
        self.count_calls = count_calls
        self.register_buffer("calls", torch.zeros((), dtype=torch.long), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.count_calls:  # a counter in eval mode: the model changes with every forward
            self.calls += 1
        return self.fc2(self.act(self.bn(self.fc1(x.flatten(1)))))


def toy_data(n: int = 16) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.rand(n, 1, 4, 5, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def test_a_changed_non_persistent_buffer_is_caught() -> None:
    model = Stateful()
    before = ModelSnapshot.capture(model)
    model.calls += 1
    with pytest.raises(ModelChangedError, match="'calls'"):
        before.verify(model, "the test")


def test_a_model_counting_in_a_non_persistent_buffer_is_refused_and_put_back() -> None:
    model = Stateful(count_calls=True).eval()
    x, y = toy_data()
    with pytest.raises(ModelChangedError, match="changed the model's 'calls'"):
        evaluate_model(model, CONFIG, x, y, threads=1)
    assert int(model.calls) == 0


def test_everything_a_train_mode_model_and_the_caller_hold_is_as_before() -> None:
    """A user who forgot .eval(): state, non-persistent buffers, flags, requires_grad, .grad, hooks, and the global
    torch, NumPy and Python RNG states are as before an evaluation with BPDA-learned, noise and the budget check."""
    model = Stateful().train()
    with torch.no_grad():
        model(torch.rand(8, 1, 4, 5))  # duty cycles and running statistics away from their initial values
    model.fc1.weight.grad = torch.ones_like(model.fc1.weight)
    model.fc2.bias.requires_grad_(False)
    model.fc2.register_forward_hook(lambda *_: None)
    before = ModelSnapshot.capture(model)
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    torch.manual_seed(5), np.random.seed(6), random.seed(7)
    rngs = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    cfg = {**CONFIG, "attacks": [{"attack": "pgd", "params": {"steps": 5}},
                                 {"attack": "bpda", "params": {"surrogate": "learned", "inner": "pgd",
                                                               "inner_params": {"steps": 5}}}],
           "noise": [{"kind": "salt-and-pepper", "levels": [0.0, 0.2], "draws": 1}],
           "diagnostics": {"enabled": True, "gradient_batch": 8}}
    evaluate_model(model, cfg, *toy_data(), threads=1)
    before.verify(model, "the evaluation")
    assert all(torch.equal(g, p.grad) if g is not None else p.grad is None
               for (_, p), g in zip(model.named_parameters(), grads.values()))
    assert torch.equal(torch.get_rng_state(), rngs[0]) and np.array_equal(np.random.get_state()[1], rngs[1])
    assert random.getstate() == rngs[2]


def test_a_transfer_attack_draws_the_same_beside_one_source_or_two() -> None:
    """Adding a third model to a compare changed the transfer column from the second (its label, and so its seed,
    went from ``transfer`` to ``transfer(relu)``)."""
    models = {name: Stateful(seed).eval() for seed, name in enumerate(("kwta", "relu", "other"))}
    x, y = toy_data()
    cfg = {**CONFIG, "mode": "independent", "transfer": {"attack": "pgd", "params": {"steps": 3}}}
    two = compare_models_in_memory(dict(list(models.items())[:2]), cfg, x, y, threads=1)[0]
    three = compare_models_in_memory(models, cfg, x, y, threads=1)[0]
    alone, beside = two.result("transfer", "linf", 0.1), three.result("transfer(relu)", "linf", 0.1)
    assert alone is not None and beside is not None
    assert (alone.seed, alone.flags, alone.margins) == (beside.seed, beside.flags, beside.margins)


def test_a_resumed_result_of_another_seed_is_run_again(tmp_path: Path) -> None:
    """A finished unit whose seed is not the one this version derives (an earlier version's) is not kept."""
    model, (x, y), out = Stateful().eval(), toy_data(), tmp_path / "r.json"
    first = evaluate_model(model, CONFIG, x, y, out_path=out, threads=1).result("pgd", "linf", 0.1)
    data: dict[str, Any] = json.loads(out.read_text())
    data["status"] = "partial"
    result = data["results"][0]
    result["seed"] += 1
    # every attacked sample broken, written consistently (counts, no margins, no worst case yet): a record that
    # contradicted itself would be refused before its seed is looked at (resume.check_resumable)
    result["flags"] = [0 if f >= 0 else f for f in result["flags"]]
    result["margins"], data["worst_case"] = [], []
    result["robust"] = dataclasses.asdict(Accuracy.of(0, len(result["flags"])))
    result["n_broken"] = result["n_attacked"]
    out.write_text(json.dumps(data))
    again = evaluate_model(model, CONFIG, x, y, out_path=out, threads=1).result("pgd", "linf", 0.1)
    assert first is not None and again is not None and 1 in first.flags  # a survivor: the edit is visible
    assert (again.seed, again.flags) == (first.seed, first.flags)


@pytest.mark.parametrize("kind", ["salt-and-pepper", "numenta", "uniform"])
def test_a_samples_noise_does_not_depend_on_the_samples_after_it(kind: str) -> None:
    """Salt-and-pepper drew its salt/pepper choices after every sample's pixel scores: evaluating more samples
    changed the noise of the first ones."""
    x = torch.rand(9, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    probe = create_noise_probe(kind)
    few, more = (probe.apply(x[:n], 0.3, torch.Generator().manual_seed(1), (0.0, 1.0)) for n in (5, 9))
    assert torch.equal(few, more[:5])


def test_a_result_of_another_seed_reruns_its_later_units_only_in_cascade_mode() -> None:
    """A resumed result whose seed this version derives otherwise is run again; in cascade mode so is every later
    unit at the threat point (it attacked that unit's survivors), in independent mode none of the others."""
    from types import SimpleNamespace

    from kwta_robust.attack_plan import kept_results

    stored = {"a": SimpleNamespace(seed=1), "b": SimpleNamespace(seed=99), "c": SimpleNamespace(seed=3)}
    record = SimpleNamespace(result=lambda label, norm, eps: stored.get(label))
    planned = [SimpleNamespace(label=label) for label in ("a", "b", "c")]
    cascade = kept_results(record, planned, [1, 2, 3], "linf", 0.1, cascade=True)
    independent = kept_results(record, planned, [1, 2, 3], "linf", 0.1, cascade=False)
    assert cascade == [stored["a"], None, None]
    assert independent == [stored["a"], None, stored["c"]]
