"""The evaluation runner: exact robust accuracy of a linear model, model left untouched, determinism, resume,
saved adversarial inputs, transfer sources and the sanity attack."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from attacks.base import REGISTRY, AttackInfo, ThreatModel, create_attack
from attacks.cascade import AttackContractError
from kwta_robust.adversarial_store import parts_folder
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import ModelChangedError, evaluate
from kwta_robust.layers import KWTA
from kwta_robust.results import load_record
from kwta_robust.samples import select_samples

D = 20  # input features, viewed as [1, 4, 5] images


class LinearBinary(nn.Module):
    """``f(x) = w·x + b``; class 0 iff ``f(x) > 0`` (logits ``[f/2, -f/2]``)."""

    def __init__(self, w: Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(float(b)))

    def score(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.w + self.b

    def forward(self, x: Tensor) -> Tensor:
        f = self.score(x)
        return torch.stack([f / 2, -f / 2], dim=1)


def linear_problem(n: int = 120, seed: int = 0) -> tuple[LinearBinary, TensorData]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(D, generator=gen)
    model = LinearBinary(w, -0.5 * float(w.sum()))  # boundary through the centre of the data
    x = 0.3 + 0.4 * torch.rand(n, 1, 4, 5, generator=gen)  # inside [0.3, 0.7]: with eps <= 0.05 the box never binds
    with torch.no_grad():
        y = (model.score(x) <= 0).long()
    flip = torch.rand(n, generator=gen) < 0.1  # some samples misclassified clean
    y[flip] = 1 - y[flip]
    return model, TensorData(x, y, "toy", 2, torch.arange(n, dtype=torch.long))


def config(**extra: Any) -> EvalConfig:
    data = {
        "dataset": "toy", "batch_size": 32, "seed": 0,
        "threats": [{"norm": "linf", "epsilons": [0.01, 0.03, 0.05]}],
        "attacks": [{"attack": "pgd", "params": {"steps": 40}}],
        "diagnostics": {"enabled": True, "gradient_batch": 16},
    }
    data.update(extra)
    return EvalConfig.from_dict(data)


def test_pgd_reaches_the_closed_form_linf_robust_accuracy() -> None:
    """For f(x) = w·x + b the smallest Linf perturbation that flips the class is |f(x)| / ||w||_1 (box not binding)."""
    model, data = linear_problem()
    record = evaluate(model, data, config(), {"name": "linear"}, progress=False)
    x, y = data.x, data.y
    with torch.no_grad():
        f = model.score(x)
    correct = (f > 0) == (y == 0)
    distance = f.abs() / model.w.detach().abs().sum()
    tol = 1e-4  # samples this close to eps may go either way in float32
    assert int(correct.sum()) == record.clean.correct
    for eps in (0.01, 0.03, 0.05):
        surely = int((correct & (distance > eps + tol)).sum())
        ambiguous = int((correct & ((distance - eps).abs() <= tol)).sum())
        got = record.result("pgd", "linf", eps).robust.correct
        assert surely <= got <= surely + ambiguous, (eps, surely, ambiguous, got)
        assert record.worst("linf", eps).robust.correct == got
        assert 0 < surely < int(correct.sum())  # the test is informative: some but not all samples robust
    assert record.status == "complete"
    assert sorted(record.dataset["indices"]) == data.indices.tolist()  # all n, in a seeded order


class Stateful(nn.Module):
    """BatchNorm (running stats) + kWTA with boosting (duty cycles update in train mode): state that must not move."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(D, 16)
        self.bn = nn.BatchNorm1d(16)
        self.act = KWTA(ratio=0.5, boost_strength=1.0, num_units=16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.bn(self.fc1(x.flatten(1)))))


def three_class_data(n: int = 48) -> TensorData:
    gen = torch.Generator().manual_seed(3)
    return TensorData(torch.rand(n, 1, 4, 5, generator=gen), torch.randint(0, 3, (n,), generator=gen), "toy", 3,
                      torch.arange(n, dtype=torch.long))


def snapshot(model: nn.Module) -> tuple[dict, dict, dict]:
    return ({k: v.clone() for k, v in model.state_dict().items()}, {n: m.training for n, m in model.named_modules()},
            {n: p.requires_grad for n, p in model.named_parameters()})


def test_model_left_exactly_as_it_was() -> None:
    model = Stateful()
    model.train()
    model.bn.eval()  # mixed flags must come back exactly
    model.fc2.weight.requires_grad_(False)
    with torch.no_grad():  # give the duty cycles a non-trivial state
        model.act(torch.randn(8, 16))
    before = snapshot(model)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.1]}],
                 attacks=[{"attack": "pgd", "params": {"steps": 5}}, "fgsm"],
                 noise=[{"kind": "gaussian", "levels": [0.0, 0.1], "draws": 1}])
    record = evaluate(model, three_class_data(), cfg, {}, progress=False)
    after = snapshot(model)
    assert before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1] == after[1] and before[2] == after[2]
    assert record.model["state_sha256"]


@pytest.fixture
def register(request: pytest.FixtureRequest) -> Any:
    """Registers a test attack for one test."""

    def add(name: str, factory: Any) -> None:
        REGISTRY.add(name, AttackInfo(name, factory, ("linf", "l2"), "white-box"))
        request.addfinalizer(lambda: REGISTRY.unregister(name))

    return add


def test_an_attack_that_changes_the_model_is_caught(register: Any) -> None:
    class Hostile:
        name = "hostile"

        def __init__(self, seed: int = 0) -> None:
            pass

        def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
            model.bn.running_mean.add_(1.0)  # e.g. a forward pass in train mode
            return x

    register("test-hostile", Hostile)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["test-hostile"])
    with pytest.raises(ModelChangedError,
                       match="attack 'test-hostile' at Linf 0.1 changed the model's 'bn.running_mean'"):
        evaluate(Stateful(), three_class_data(), cfg, {}, progress=False)


def test_an_attack_that_leaves_a_hook_is_caught(register: Any) -> None:
    class Hooking:
        name = "hooking"

        def __init__(self, seed: int = 0) -> None:
            pass

        def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
            model.bn.register_forward_hook(lambda m, a, o: None)  # e.g. a BPDA wrapper not removed
            return x

    register("test-hooking", Hooking)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["test-hooking"])
    with pytest.raises(ModelChangedError, match="attack 'test-hooking' at Linf 0.1 left the hooks of module 'bn'"):
        evaluate(Stateful(), three_class_data(), cfg, {}, progress=False)


@pytest.mark.parametrize("mutate,text", [
    # caught before the runner re-classifies (in train mode a BatchNorm would move its statistics, dropout drop):
    (lambda m: m.bn.train(), "left module 'bn' in train mode"),
    (lambda m: m.bn.weight.requires_grad_(False), "at Linf 0.1 changed requires_grad of parameter 'bn.weight'"),
    (lambda m: m.bn.register_buffer("leftover", torch.zeros(1)),
     "at Linf 0.1 changed the model's state_dict or buffer names ('bn.leftover')"),
], ids=["train-flag", "requires-grad", "new-buffer"])
def test_every_other_change_an_attack_makes_is_caught(register: Any, mutate: Any, text: str) -> None:
    class Meddling:
        name = "meddling"

        def __init__(self, seed: int = 0) -> None:
            pass

        def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
            mutate(model)
            return x

    register("test-meddling", Meddling)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["test-meddling"])
    with pytest.raises((ModelChangedError, AttackContractError), match=re.escape(text)) as caught:
        evaluate(Stateful(), three_class_data(), cfg, {}, progress=False)
    assert re.match(r"attack '(test-)?meddling' ", str(caught.value))


def numbers(record) -> dict:
    """Everything but timings and provenance."""
    data = record.to_dict()
    for section in ("results", "sanity"):
        for r in data[section]:
            r.pop("wall_time_s")
    for r in data["noise"]:
        r.pop("wall_time_s")
    data["detection"].pop("wall_time_s")
    data.pop("provenance")
    data.pop("status")
    return data


def test_same_seed_same_numbers() -> None:
    model, data = linear_problem(60)
    cfg = config(attacks=[{"attack": "pgd", "params": {"steps": 3, "step_size": 0.002}}],
                 noise=[{"kind": "gaussian", "levels": [0.0, 0.2], "draws": 2}])
    first = evaluate(model, data, cfg, {}, progress=False)
    second = evaluate(model, data, cfg, {}, progress=False)
    assert numbers(first) == numbers(second)
    other = evaluate(model, data, cfg.with_overrides(seed=1), {}, progress=False)
    assert other.results[0].seed != first.results[0].seed
    assert other.dataset["indices"] != first.dataset["indices"] or len(data) == len(first.dataset["indices"])


def test_resume_skips_finished_units_and_matches_an_uninterrupted_run(tmp_path: Path, register: Any) -> None:
    calls: list[tuple[str, float]] = []
    interrupt: dict[str, Any] = {"at": None}

    class Counted:
        """PGD that logs its calls and can be interrupted at one (tag, eps)."""

        def __init__(self, tag: str = "", seed: int = 0) -> None:
            self.tag, self.name = tag, f"counted-{tag}"
            self.pgd = create_attack("pgd", steps=5, seed=seed)

        def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
            calls.append((self.tag, threat.eps))
            if interrupt["at"] == (self.tag, threat.eps):
                raise KeyboardInterrupt
            return self.pgd(model, x, y, threat)

    register("test-counted", Counted)
    model, data = linear_problem(60)
    cfg = config(
        threats=[{"norm": "linf", "epsilons": [0.03, 0.05]}],
        attacks=[{"attack": "test-counted", "params": {"tag": "a"}},
                 {"attack": "test-counted", "params": {"tag": "b"}}],
        noise=[{"kind": "uniform", "levels": [0.0, 0.1], "draws": 1}],
    )
    out = tmp_path / "rec.json"
    interrupt["at"] = ("b", 0.03)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, data, cfg, {}, out_path=out, progress=False)
    partial = load_record(out)
    assert partial.status == "partial"
    assert [(r.label, r.eps) for r in partial.results] == [("test-counted(tag=a)", 0.03)]

    calls.clear()
    interrupt["at"] = None
    resumed = evaluate(model, data, cfg, {}, out_path=out, progress=False)
    assert ("a", 0.03) not in calls  # the finished unit was kept, not recomputed
    assert ("b", 0.03) in calls and ("a", 0.05) in calls
    assert resumed.status == "complete" and len(resumed.provenance["resumed_at"]) == 1

    fresh = evaluate(model, data, cfg, {}, out_path=tmp_path / "fresh.json", progress=False)
    assert numbers(resumed) == numbers(fresh)
    assert numbers(load_record(out)) == numbers(fresh)

    refused = "of another config (seed: 0 in the record, 5 now) and other samples; use a new --out or --no-resume"
    with pytest.raises(ConfigError, match=re.escape(refused)):
        evaluate(model, data, cfg.with_overrides(seed=5), {}, out_path=out, progress=False)
    calls.clear()
    evaluate(model, data, cfg, {}, out_path=out, resume=False, progress=False)
    assert ("a", 0.03) in calls  # --no-resume starts over


def test_save_adversarial_can_be_rechecked(tmp_path: Path) -> None:
    model, data = linear_problem(40)
    path = tmp_path / "adv.pt"
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.05]}])
    record = evaluate(model, data, cfg, {}, save_adversarial=path, progress=False)
    saved = torch.load(path, weights_only=True)
    assert not parts_folder(path).exists()  # the units, each saved as it finished, are joined into the file
    key = "pgd|linf|0.05"
    assert {"x", "y", "indices", "pred_clean", f"adv/{key}", f"pred/{key}", f"flags/{key}"} <= set(saved)
    x_adv, pred, flags = saved[f"adv/{key}"], saved[f"pred/{key}"], saved[f"flags/{key}"]
    assert bool(ThreatModel("linf", 0.05).contains(x_adv, saved["x"]).all())
    attacked = flags >= 0
    with torch.no_grad():
        again = model(x_adv).argmax(dim=1)
    assert torch.equal(again[attacked], pred[attacked])
    assert flags.tolist() == record.result("pgd", "linf", 0.05).flags
    assert torch.equal(saved["pred_clean"] == saved["y"], torch.tensor(record.clean_flags, dtype=torch.bool))


def test_transfer_sources_and_sanity_attack() -> None:
    model, data = linear_problem(40)
    source = copy.deepcopy(model)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.05]}],
                 diagnostics={"sanity": {"norm": "linf", "eps": 0.5, "params": {"steps": 20}}})
    record = evaluate(model, data, cfg, {}, transfer_sources={"twin": source}, progress=False)
    transfer = record.result("transfer", "linf", 0.05)
    assert transfer is not None and transfer.kind == "transfer" and transfer.source == "twin"
    assert transfer.position == 1 and transfer.cumulative
    pgd = record.result("pgd", "linf", 0.05)
    # crafted on an identical twin, the transfer attack finds nothing PGD missed
    assert transfer.robust.correct == pgd.robust.correct
    assert record.worst("linf", 0.05).attacks == ["pgd", "transfer"]
    two = evaluate(model, data, cfg, {}, transfer_sources={"a": source, "b": copy.deepcopy(model)}, progress=False)
    assert two.worst("linf", 0.05).attacks == ["pgd", "transfer(a)", "transfer(b)"]
    assert [r.label for r in record.sanity] == ["sanity-pgd"]
    assert record.sanity[0].robust.correct == 0
    assert not [f for f in record.diagnostics if f.severity != "info"]


class ForeignTopK(nn.Module):
    """A top-k gate written outside the package (as Xiao et al.'s ``Sparsify1D``): ``[N, F] → [N, F]``."""

    def forward(self, x: Tensor) -> Tensor:
        return x * (x >= x.topk(4, dim=1).values[:, -1:]).to(x.dtype)


def test_a_bpda_sanity_attack_acts_on_the_layers_the_probe_found() -> None:
    _, data = linear_problem(24)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 16), ForeignTopK(), nn.Linear(16, 2))
    with torch.no_grad():
        data = TensorData(data.x, model(data.x).argmax(1), "toy", 2, data.indices)
    sanity = {"norm": "linf", "eps": 0.5, "attack": "bpda",
              "params": {"surrogate": "smooth", "inner": "pgd", "inner_params": {"steps": 5}}}
    record = evaluate(model, data, config(threats=[{"norm": "linf", "epsilons": [0.05]}],
                                          diagnostics={"sanity": sanity, "gradient_batch": 16}), {}, progress=False)
    assert [r.label for r in record.sanity] == ["sanity-bpda"]
    assert record.sanity[0].bpda_layers == {"2": "wrapped gate/dense"}  # not the plain inner attack
    assert "bpda-no-layer" not in [f.code for f in record.diagnostics]


def test_sample_selection() -> None:
    _, data = linear_problem(50)
    cfg = config(n_examples=10)
    a, b = select_samples(data, cfg), select_samples(data, cfg)
    assert torch.equal(a.indices, b.indices) and len(a) == 10
    assert not torch.equal(a.indices, torch.arange(10))  # a seeded permutation, not the first ten
    assert not torch.equal(select_samples(data, config(n_examples=10, sample_seed=1)).indices, a.indices)
    with pytest.raises(ConfigError, match=r"n_examples: 60 requested but toy.*; set n_examples: 50 or fewer \(null"):
        select_samples(data, config(n_examples=60))
