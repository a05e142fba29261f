"""Fuzzing round on attack settings at the edges of what is accepted, run end to end: a float setting beyond
float32's range (the attacks compute in float32, where ``1e39`` is ``inf`` and ``1e-300`` is ``0``) stopped a run
with a line blaming the attack's code ("attack 'apgd-ce' raised RuntimeError: value cannot be converted to type
float without overflow ... fix the code there"), flagged out-of-ball outputs that the attack never made, or let an
attack silently do nothing (a step of 0); now each is one line naming the field, the range and what was got."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from attack_fixtures import trained_cnn
from attacks import create_attack
from attacks.errors import FLOAT32_MAX
from eval_helpers import make_record, make_result
from kwta_robust.api import compare_models_in_memory, evaluate_model
from kwta_robust.cli import main
from kwta_robust.diagnostics import run_checks
from kwta_robust.errors import KwtaRobustError
from test_api_fuzz import FAST, data4, refused
from test_cli_eval import ckpt, run_error, write_config  # noqa: F401  (ckpt: a fixture)
from test_python_api import make_net

RANGE = "within float32's range, 1.2e-38 to 3.4e+38"


def config(attack: dict, norm: str = "linf", eps: float = 0.1, **extra: object) -> dict:
    return {**FAST, "threats": [{"norm": norm, "epsilons": [eps]}], "attacks": [attack], **extra}


def smooth_bpda(schedule: list) -> dict:
    return {"attack": "bpda", "params": {"surrogate": "smooth", "inner": "pgd", "temperature_schedule": schedule,
                                         "stage_steps": [1] * len(schedule)}}


CASES = {
    # before: 8 of 8 outputs counted out of the ball (x + inf * g / ||g|| is NaN), an out-of-ball-outputs flag
    "pgd step": (config({"attack": "pgd", "params": {"steps": 2, "step_size": 1e39}}, "l2", 1.0),
                 f"attacks[0]: attack 'pgd': step_size must be a finite number > 0 {RANGE}"),
    # before: attack 'apgd-ce' raised RuntimeError: value cannot be converted to type float without overflow
    "apgd initial step": (config({"attack": "apgd-ce", "params": {"steps": 2, "initial_step": 1e39}}, "l2", 1.0),
                          f"attacks[0]: attack 'apgd-ce': initial_step must be a finite number > 0 {RANGE}"),
    "cw initial_const": (config({"attack": "cw", "params": {"steps": 1, "initial_const": 1e39}}, "l2", 1.0),
                         f"attacks[0]: attack 'cw': initial_const must be a finite number > 0 {RANGE}"),
    "cw kappa": (config({"attack": "cw", "params": {"steps": 1, "kappa": 1e39}}, "l2", 1.0),
                 f"attacks[0]: attack 'cw': kappa must be a finite number >= 0 {RANGE}"),
    # before: ran, every probe x ± 0·u equal to x: a zero gradient estimate, the attack silently did nothing
    "ge sigma": (config({"attack": "gradient-estimation", "params": {"steps": 1, "sigma": 1e-300}}),
                 f"attacks[0]: sigma: must be a number > 0 {RANGE} (or omitted for the default), got 1e-300"),
    "eot step": (config({"attack": "eot", "params": {"steps": 1, "step_size": 1e39}}),
                 f"attacks[0]: step_size: must be a number > 0 {RANGE} (or omitted for the default), got 1e+39"),
    # before: T = 0 in float32 (refused when written as 0): NaN gradients, 6 of 8 outputs counted out of the ball
    "bpda tiny T": (config(smooth_bpda([1e-300])), "attacks[0]: temperature_schedule: each entry is a temperature > 0 "
                    f"{RANGE}"),
    "bpda huge T": (config(smooth_bpda([0.1, 1e39])), "got [0.1, 1e+39]"),
    "bpda log-uniform": (config(smooth_bpda([{"log_uniform": [1e-300, 0.1]}])), "{log_uniform: [lo, hi]}"),
    # before: every output counted out of the ball (an inf radius), or CW's OverflowError 'Numerical result out of
    # range' blamed on its code
    "l2 eps": (config({"attack": "fgsm"}, "l2", 1e39),
               "threats[0].epsilons[0]: epsilon must be a finite number >= 0 and at most 1e+30 (float32 arithmetic "
               "overflows beyond it; an L2 eps of sqrt(D), 28 on 28x28 images, already reaches every image in [0, 1]), "
               "got 1e+39"),
    "sanity eps": (config({"attack": "fgsm"}, diagnostics={"sanity": {"norm": "l2", "eps": 1e300}}),
                   "diagnostics.sanity.eps: epsilon must be a finite number >= 0 and at most 1e+30"),
    # before: "noise probe 'gaussian' returned NaN or infinite values at level 1e+39" (no field, no fix)
    "noise level": (config({"attack": "fgsm"}, noise=[{"kind": "gaussian", "levels": [0.1, 1e39]}]),
                    "noise[0].levels[1]: must be at most 3.4e+38 (float32's largest), got 1e+39"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_setting_beyond_float32_is_one_line_naming_the_field(name: str) -> None:
    cfg, words = CASES[name]
    x, y = data4()
    refused(KwtaRobustError, words, lambda: evaluate_model(make_net().eval(), cfg, x, y))


def test_the_float32_bounds_themselves_are_accepted() -> None:
    """The range is closed: the largest and the smallest normal float32 build, as 0 does where it is allowed."""
    assert create_attack("pgd", steps=1, step_size=FLOAT32_MAX).step_size == FLOAT32_MAX
    assert create_attack("cw", kappa=0.0).kappa == 0.0
    assert create_attack("gradient-estimation", sigma=1.1754943508222875e-38).sigma == 1.1754943508222875e-38
    x, y = data4()
    cfg = config({"attack": "pgd", "params": {"steps": 1}}, "l2", 1e30, mode="independent")
    cfg["attacks"] += [{"attack": "apgd-ce", "params": {"steps": 1}}, {"attack": "square", "params": {"n_queries": 2}},
                       {"attack": "cw", "params": {"steps": 1, "search_steps": 1}}, "fgsm"]
    record = evaluate_model(make_net().eval(), cfg, x, y, label="edge")
    assert [r.label for r in record.results] == ["pgd", "apgd-ce", "square", "cw", "fgsm"]
    for result in record.results:
        assert result.eps == 1e30 and result.violations == 0 and result.queries > 0
        assert 0 <= result.robust.accuracy <= record.clean.accuracy
    assert record.worst("l2", 1e30).robust.accuracy == min(r.robust.accuracy for r in record.results)


def test_the_cli_names_the_field_with_exit_2(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    """Before: 'error: attack 'apgd-ce' raised RuntimeError: value cannot be converted to type float without
    overflow (at attacks/apgd.py:169) ...; fix the code there' after the data and the probes had run."""
    cfg = write_config(tmp_path / "c.yaml", threats=[{"norm": "l2", "epsilons": [1.0]}],
                       attacks=[{"attack": "apgd-ce", "params": {"steps": 2, "initial_step": 1e39}}])
    out = tmp_path / "r.json"
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--no-progress"])
    assert line.startswith(f"error: attacks[0]: attack 'apgd-ce': initial_step must be a finite number > 0 {RANGE}")
    assert not out.exists()
    data = yaml.safe_load(cfg.read_text())
    data["threats"] = [{"norm": "l2", "epsilons": [1e39]}]
    data["attacks"] = ["fgsm"]
    cfg.write_text(yaml.safe_dump(data))
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--no-progress"])
    assert line.startswith("error: threats[0].epsilons[0]: epsilon must be a finite number >= 0 and at most 1e+30")
    assert main(["table", str(out)]) == 2 and not out.exists()


def test_a_transfer_inner_attack_of_another_norm_is_refused_before_any_attack() -> None:
    """``transfer: {attack: cw}`` with Linf threats stopped the first model's cascade at its transfer unit with
    "attack 'transfer(cw, source=b)' does not support norm 'linf'; supported: l2" (no field, no fix)."""
    x, y = data4()
    cfg = {**FAST, "transfer": {"attack": "cw", "params": {"steps": 1}}}
    words = "transfer.attack: 'cw' does not support linf (a threat of this config); use an inner attack that does"
    refused(KwtaRobustError, words, lambda: compare_models_in_memory({"a": make_net().eval(), "b": make_net().eval()},
                                                                     cfg, x, y))
    bpda = {**FAST, "threats": [{"norm": "linf", "epsilons": [0.1]}, {"norm": "l2", "epsilons": [1.0]}],
            "transfer": {"attack": "bpda", "params": {"inner": "cw"}}}
    refused(KwtaRobustError, "transfer.attack: 'bpda' with inner 'cw' does not support linf",
            lambda: compare_models_in_memory({"a": make_net().eval(), "b": make_net().eval()}, bpda, x, y))
    records = compare_models_in_memory({"a": make_net().eval(), "b": make_net().eval()},
                                       {**cfg, "threats": [{"norm": "l2", "epsilons": [1.0]}]}, x, y)
    assert [r.label for r in records[0].results] == ["fgsm", "transfer"] and records[0].results[1].source == "b"


@pytest.mark.parametrize("attack,params,words", [
    ("pgd", {"steps": 1, "random_start": "false"}, "attacks[0]: attack 'pgd': random_start must be true or false, "
                                                  "got 'false'"),
    ("square", {"n_queries": 2, "rescale_schedule": "no"}, "attack 'square': rescale_schedule must be true or false"),
    ("gradient-estimation", {"steps": 1, "random_start": 0},
     "attacks[0]: attack 'gradient-estimation': random_start must be true or false, got 0"),
    ("eot", {"steps": 1, "random_start": None},
     "attacks[0]: attack 'eot': random_start must be true or false, got None"),
])
def test_a_switch_that_is_not_a_bool_is_refused(attack: str, params: dict, words: str) -> None:
    """Before: ``random_start: "false"`` (a YAML string) ran as ``bool("false")``, a random start; ``0`` and
    ``None`` ran without one: the record's settings kept the string, the attack did the opposite."""
    x, y = data4()
    refused(KwtaRobustError, words, lambda: evaluate_model(make_net().eval(), config({"attack": attack,
                                                                                     "params": params}), x, y))


@pytest.mark.parametrize("p_init", ["0.5", None, True])
def test_square_p_init_that_is_not_a_number_is_named(p_init: object) -> None:
    """Before: '0.5' and None gave "invalid parameters [...]: '<' not supported between instances of 'int' and
    'str'" (TypeError's words), and True ran as p_init 1."""
    x, y = data4()
    refused(KwtaRobustError, f"attacks[0]: attack 'square': p_init must lie in (0, 1], got {p_init!r}",
            lambda: evaluate_model(make_net().eval(), config({"attack": "square", "params": {"n_queries": 2,
                                                                                           "p_init": p_init}}), x, y))


def test_non_finite_attack_outputs_are_named_in_the_flag() -> None:
    """An accepted but extreme setting (BPDA-smooth T = 1e-20 at L2 1 on the kWTA CNN: a division that overflows in
    float32) returned NaN entries; the runner puts the clean input's entries there, but the flag only said "projected
    before re-classification (... max excess inf)", not that the attack's work on those samples was discarded."""
    model, x, y = trained_cnn("kwta")
    cfg = config({"attack": "bpda", "params": {"surrogate": "smooth", "inner": "pgd", "temperature_schedule": [1e-20],
                                               "stage_steps": [2]}}, "l2", 1.0, n_examples=8, batch_size=8)
    record = evaluate_model(model, cfg, x[:8], y[:8])
    result, = record.results
    assert result.violations > 0 and result.max_violation == float("inf")
    flag, = [f for f in record.diagnostics if f.code == "out-of-ball-outputs"]
    assert flag.severity == "info"
    assert flag.message.endswith("; bpda returned NaN/inf entries, replaced by the clean input's (an attack setting "
                                 "overflowed: lower its step size, constant or temperature)")
    finite = make_result("pgd", [1, 0, 1], violations=2)
    assert "NaN" not in run_checks(make_record([finite]))[0].message
