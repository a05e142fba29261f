"""The documentation's examples, run as written, and what eval_configs/README.md says each shipped config runs.

* the docstring ``Example`` blocks of attacks/ show values (``attack.name``, ``stage_temperature``'s first
  temperature, ``last_queries`` per sample, ``count.total``): computed here on a tiny trained CNN;
* eval_configs/README.md's table of shipped configs names their attacks, budgets, threat points and sample counts:
  each row is checked against the loaded config;
* the refusal eval_configs/README.md quotes is the command line's exact line (exit 2, no traceback).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attack_fixtures import trained_cnn
from attacks.base import ThreatModel, create_attack
from attacks.bpda_temperature import StepTemperature, per_step_temperature, stage_temperature
from attacks.queries import count_queries
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.layers import KWTA, KWTA2d

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "eval_configs"


@pytest.fixture(scope="module")
def kwta() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = trained_cnn("kwta")
    return model, x[:6], y[:6]


# --- docstring examples (attacks/) ----------------------------------------------------------------------------------

def test_stage_temperature_example_gives_the_geometric_mean_and_a_log_uniform_step() -> None:
    """attacks/bpda_temperature.py: ``stage_temperature({"log_uniform": [0.02, 0.1]}, schedule)`` is
    ``(0.0447..., StepTemperature("log-uniform", ...))``."""
    first, step = stage_temperature({"log_uniform": [0.02, 0.1]}, [{"log_uniform": [0.02, 0.1]}])
    assert first == pytest.approx(0.04472135955, rel=1e-9)  # sqrt(0.02 * 0.1), worked by hand
    assert step == StepTemperature("log-uniform", (0.02, 0.1))


def test_per_step_temperature_example_draws_in_the_range_and_removes_its_hook(kwta) -> None:
    model, x, y = kwta
    switched = {name: m for name, m in model.named_modules() if isinstance(m, (KWTA, KWTA2d))}
    for layer in switched.values():
        layer.set_backward("smooth", 1.0)
    _, step_temperature = stage_temperature({"log_uniform": [0.02, 0.1]}, None)
    seen: list[float] = []
    layer = next(iter(switched.values()))
    hooks = len(model._forward_pre_hooks)
    with per_step_temperature(model, switched, step_temperature, seed=0):
        handle = model.register_forward_pre_hook(  # runs after the temperature hook: sees the value it set
            lambda module, args: seen.append(layer.temperature) if torch.is_grad_enabled() else None)
        x_adv = create_attack("pgd", steps=3)(model, x, y, ThreatModel("linf", 0.1))
        handle.remove()
    assert len(model._forward_pre_hooks) == hooks and x_adv.shape == x.shape
    assert len(seen) >= 3 and len(set(seen)) == len(seen) and all(0.02 <= t <= 0.1 for t in seen)  # a draw each
    for layer in switched.values():
        layer.set_backward("exact")


def test_bpda_example_name_and_ball(kwta) -> None:
    """attacks/bpda.py: ``attack.name  # 'bpda-smooth+pgd'``; the inner budget trimmed from 100 steps to 6."""
    model, x, y = kwta
    attack = create_attack("bpda", surrogate="smooth", inner="pgd", inner_params={"steps": 6},
                           temperature_schedule=[1.0, 0.3, 0.1])
    assert attack.name == "bpda-smooth+pgd"
    threat = ThreatModel("linf", "8/255")
    assert threat.eps == 8 / 255
    x_adv = attack(model, x, y, threat)
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6 and 0 <= float(x_adv.min()) <= float(x_adv.max()) <= 1


def test_learned_bpda_example_keeps_a_fit_error_per_gated_layer(kwta) -> None:
    """attacks/bpda.py: ``bpda.last_fit_error  # {'features.2': 0.021, ...}`` — one entry per layer it acted on."""
    model, x, y = kwta
    bpda = create_attack("bpda", surrogate="learned", inner="apgd-ce", inner_params={"steps": 4})
    bpda(model, x, y, ThreatModel("linf", 0.3))
    gated = {name for name, m in model.named_modules() if isinstance(m, (KWTA, KWTA2d))}
    assert set(bpda.last_fit_error) == gated == {"2", "6"}
    assert all(0 <= e < 1 for e in bpda.last_fit_error.values())


def test_gradient_estimation_example_counts_queries_per_sample(kwta) -> None:
    """attacks/adaptive.py: ``ge.last_queries  # [N] model evaluations spent per sample`` (budget trimmed)."""
    model, x, y = kwta
    ge = create_attack("gradient-estimation", steps=3, samples_start=2, samples_end=4)
    with count_queries(model) as count:
        x_adv = ge(model, x, y, ThreatModel("linf", 0.1))
    assert ge.last_queries.shape == (len(x),) and ge.last_queries.dtype == torch.int64
    with torch.no_grad():
        assert bool((model(x_adv).argmax(1) == y).all())  # nothing broken: every sample took all three steps
    # worked by hand: the entry check, then per step of n samples 2n probes and the new iterate (n = 2, 3, 4)
    assert ge.last_queries.tolist() == [1 + (2 * 2 + 1) + (2 * 3 + 1) + (2 * 4 + 1)] * len(x)
    assert count.forwards == ge.last_total_queries == 22 * len(x)  # the count is every row through the model


def test_query_count_example_total_is_forwards_plus_backwards(kwta) -> None:
    """attacks/queries.py: ``count.forwards, count.backwards, count.total`` around one attack call."""
    model, x, y = kwta
    with count_queries(model) as count:
        create_attack("pgd", steps=2, restarts=1)(model, x, y, ThreatModel("linf", 0.1))
    assert count.backwards == 2 * len(x)  # one input gradient per step and sample
    assert count.forwards >= count.backwards and count.total == count.forwards + count.backwards


def test_transfer_examples_name_the_inner_attack_and_the_source(kwta) -> None:
    model, x, y = kwta
    relu_twin, _, _ = trained_cnn("relu")
    first = create_attack("transfer", source=relu_twin, inner="pgd", inner_params={"steps": 3}, source_name="relu-twin")
    second = create_attack("transfer", source=relu_twin, inner="apgd-ce", source_name="relu-twin")
    assert (first.name, second.name) == ("transfer(pgd, source=relu-twin)", "transfer(apgd-ce, source=relu-twin)")
    x_adv = first(model, x, y, ThreatModel("linf", 0.3))
    assert float((x_adv - x).abs().max()) <= 0.3 + 1e-6


@pytest.mark.parametrize("name, params, threat", [
    ("fab", {"steps": 3}, ("linf", 0.1)), ("fab-t", {"n_target_classes": 9, "steps": 3}, ("l2", 1.5)),
    ("apgd-ce", {"steps": 3}, ("linf", 0.3)), ("apgd-t", {"n_target_classes": 9, "steps": 3}, ("l2", 0.5)),
    ("eot", {"steps": 3, "eot_samples": 2, "loss": "margin"}, ("l2", 0.5)),
])
def test_the_one_line_examples_run_and_stay_in_the_ball(kwta, name, params, threat) -> None:
    model, x, y = kwta
    threat = ThreatModel(*threat)
    x_adv = create_attack(name, **params)(model, x, y, threat)
    assert x_adv.shape == x.shape and bool((threat.distance(x_adv, x) <= threat.eps * (1 + 1e-5)).all())


# --- eval_configs/README.md: the shipped configs' table -----------------------------------------------------------

def load(name: str) -> EvalConfig:
    return EvalConfig.from_yaml(CONFIGS / name)


def points(cfg: EvalConfig) -> list[tuple[str, tuple[float, ...]]]:
    return [(t.norm, t.epsilons) for t in cfg.threats]


def test_quick_is_pgd_20_then_fgsm_at_linf_0_3_on_100_mnist5k_test_images() -> None:
    cfg = load("quick.yaml")
    assert (cfg.dataset, cfg.split, cfg.n_examples, points(cfg)) == ("mnist5k", "test", 100, [("linf", (0.3,))])
    assert [(a.attack, a.params.get("steps")) for a in cfg.attacks] == [("pgd", 20), ("fgsm", None)]


def test_full_suite_rows_budgets() -> None:
    """mnist5k-full.yaml: Linf 0.1/0.2/0.3; BPDA-smooth (APGD-CE) a short stage then 500 steps at T = 0.03; BPDA
    smooth with three 1,000-step runs at T = 0.1/0.05/0.03; identity BPDA; Numenta noise; a large-eps sanity check."""
    cfg = load("mnist5k-full.yaml")
    assert (cfg.dataset, points(cfg)) == ("mnist5k", [("linf", (0.1, 0.2, 0.3))])
    by_label = {a.label or a.attack: a for a in cfg.attacks}
    short = by_label["bpda-smooth"].params
    assert (short["inner"], short["temperature_schedule"][-1], short["stage_steps"][-1]) == ("apgd-ce", 0.03, 500)
    assert short["stage_steps"][0] < 500
    long = by_label["bpda-smooth-long"].params
    assert (long["temperature_schedule"], long["stage_steps"]) == ([0.1, 0.05, 0.03], [1000, 1000, 1000])
    assert by_label["bpda-identity"].params["surrogate"] == "identity"
    assert [a.attack for a in cfg.attacks if a.attack == "pgd"] == ["pgd"] * 3  # the PGD ladder (20, 100, margin)
    assert {"apgd-ce", "apgd-t", "fgsm", "gradient-estimation", "square"} <= {a.attack for a in cfg.attacks}
    assert [p.kind for p in cfg.noise] == ["numenta"] and cfg.diagnostics.sanity.eps == 1.0


def test_cifar10_is_autoattack_standard_at_the_reference_budgets() -> None:
    cfg = load("cifar10.yaml")
    assert (cfg.dataset, points(cfg)) == ("cifar10", [("linf", (8 / 255,)), ("l2", (0.5,))])
    params = {a.attack: a.params for a in cfg.attacks}
    assert params["apgd-ce"]["steps"] == params["apgd-t"]["steps"] == params["fab-t"]["steps"] == 100
    assert params["apgd-t"]["n_target_classes"] == params["fab-t"]["n_target_classes"] == 9
    assert params["square"]["n_queries"] == 5000
    assert {"pgd", "bpda", "gradient-estimation"} <= set(params)


def test_noise_is_numenta_at_two_bright_values_gaussian_uniform_salt_and_pepper_and_no_attack() -> None:
    cfg = load("noise.yaml")
    assert not cfg.attacks and not cfg.threats
    kinds = [p.kind for p in cfg.noise]
    assert kinds == ["numenta", "numenta", "gaussian", "uniform", "salt-and-pepper"]
    assert {p.params.get("value", 1.0) for p in cfg.noise if p.kind == "numenta"} == {1.0, 0.7469}


def test_quickstart_row_stages() -> None:
    cfg = load("quickstart.yaml")
    assert (cfg.n_examples, [a.attack for a in cfg.attacks]) == (200, ["pgd", "bpda"])
    assert cfg.attacks[0].params["steps"] == 10 and [p.kind for p in cfg.noise] == ["numenta"]
    bpda = cfg.attacks[1].params
    assert (bpda["inner"], bpda["stage_steps"], bpda["stage_keep"]) == ("apgd-ce", [100, 150, 400, 1200],
                                                                         [1, 1, 0.5, 0.25])
    assert bpda["temperature_schedule"] == [0.05] + [{"log_uniform": [0.02, 0.1]}] * 3
    assert bpda["stage_params"] == [{}] + [{"initial_step": 0.5}] * 3


def test_the_refusal_eval_configs_readme_quotes_is_the_command_lines_line(tmp_path, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("dataset: mnist5k\nthreats:\n  - norm: linf\n    epsilons: [0.1, '8/2x5']\nattacks: [fgsm]\n")
    assert main(["evaluate", str(tmp_path / "none.pt"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("error: threats[0].epsilons[1]: cannot parse '8/2x5' as an epsilon; "
                                            "write a number like 0.3 or a fraction like '8/255'")
    assert not (tmp_path / "none.pt").exists()
