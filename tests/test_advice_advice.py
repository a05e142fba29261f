"""Advice that works: every fix a flag, refusal or log line names does, when followed, what it says.

* A max-pool winner-take-all gate (tests/test_pool_module_poolgate.py, tests/test_wild_lwta_pools.py): the flag and
  the probe's log said "add bpda with surrogate: model, gradient estimation and square"; under ``bpda_layers: auto``
  (the default) that BPDA acted on no layer (auto leaves max-pool gates out) and changed nothing. They now name the
  module for the model surrogate (``bpda_layers: [NAME]``); followed, BPDA acts on the gate and the flags are gone.
  (Since attacks/pool_relax.py, that advice concerns the forms BPDA cannot relax: made in place by ``nonzero``
  indices, its mask returned; attacks/pool_in_place.py relaxes ``h[h < p] = 0``.)
* An inline max-pool gate (in a block's ``forward``): the flag advised moving it into a module of its own "(auto then
  finds it)", false for such a gate, or naming a module around it, which for the smooth surrogate passed the gradient
  straight through the whole block (or read it as a top-k). Now ``auto`` acts on the block and the smooth surrogate
  relaxes the gate alone (attacks/pool_relax.py).
* A noise probe factory's own ``TypeError`` read "invalid parameters []" at ``noise[i].params``, though the call
  bound; labels quoted in matrix refusals and budget-check flags were quoted whole (a 100 kB label, a 100 kB line).
"""

from __future__ import annotations

import dataclasses
import logging
import re

import pytest
from torch import nn

import gates_styles as styles
from eval_helpers import make_record
from attacks.noise import NOISE_PROBES
from kwta_robust.budget_check import judge
from kwta_robust.config import EvalConfig
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import Thresholds, run_checks
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.matrix import cell_coordinates
from kwta_robust.record_values import shown_text
from kwta_robust.results import EvalRecord
from kwta_robust.selection_text import outside_text
from test_budget_check import _plan
from test_detect_inline_gates import config, data
from test_fuzz_fuzz_noise import BASE, _probe
from test_pool_module_poolgate import MODELS
from test_wild_lwta import PGD_THEN_BPDA
from wild_kwta_models import X

FLAGS = ("bpda-no-layer", "selections-outside-layers")
#: the form the advice names: the model surrogate on the listed modules
FORM = re.compile(r"for surrogate: model \(bpda_layers: \[([^\]]+)\]\) and add gradient estimation and square")

BUILDS = {"a gate made in place": MODELS["made in place by nonzero indices"][0],
          "its mask, applied by the parent": MODELS["its mask, applied by the parent"][0]}


def followed(names: list[str]) -> list[dict]:
    """PGD, then what the advice names: BPDA with the model surrogate on ``names``, gradient estimation and square
    (small budgets)."""
    return [PGD_THEN_BPDA[0],
            {"attack": "bpda", "bpda_layers": names, "params": {"surrogate": "model", "inner_params": {"steps": 2}}},
            {"attack": "gradient-estimation", "params": {"steps": 2, "samples_start": 4, "samples_end": 4}},
            {"attack": "square", "params": {"n_queries": 20}}]


def run(model: nn.Module, attacks: list[dict]) -> EvalRecord:
    return evaluate(model, data(model, X), config(batch_size=16, attacks=attacks), {}, progress=False)


def named_by(message: str) -> list[str]:
    """The module names of the one working form ``message`` advises."""
    (names,) = FORM.findall(message)
    return names.split(", ")


@pytest.mark.parametrize("name", list(BUILDS))
def test_following_the_selection_flags_advice_acts_on_the_gate_and_clears_the_flags(name: str) -> None:
    record = run(BUILDS[name](), PGD_THEN_BPDA)
    flags = {f.code: f for f in run_checks(record) if f.code in FLAGS}
    names = named_by(flags["selections-outside-layers"].message)
    assert named_by(flags["bpda-no-layer"].message) == names  # the same form (an inline gate: not "name it" alone)
    followed_record = run(BUILDS[name](), followed(names))
    assert list(followed_record.result("bpda", "linf", 0.1).bpda_layers) == names  # BPDA acted on the gate
    assert [f.code for f in run_checks(followed_record) if f.code in FLAGS] == []


def test_following_the_probes_log_line_acts_on_the_gate(caplog: pytest.LogCaptureFixture) -> None:
    build, gate = MODELS["made in place by nonzero indices"]
    with caplog.at_level(logging.WARNING, logger="kwta_robust.detect"):
        detect_layers(build(), X)
    (line,) = [m for m in caplog.messages if FORM.search(m)]
    assert named_by(line) == [gate]
    assert list(run(build(), followed([gate])).result("bpda", "linf", 0.1).bpda_layers) == [gate]


def test_the_advice_for_an_inline_max_pool_gate_is_bpda_with_auto() -> None:
    record = run(styles.net("pool_max"), PGD_THEN_BPDA[:1])
    (flag,) = [f for f in run_checks(record) if f.code == "selections-outside-layers"]
    assert "auto then finds it" not in flag.message  # auto acts where it is built, as on an inline top-k gate
    assert "add bpda with bpda_layers: auto" in flag.message and not FORM.search(flag.message)
    assert [f.code for f in run_checks(run(styles.net("pool_max"), PGD_THEN_BPDA)) if f.code in FLAGS] == []


def test_a_max_pool_gate_in_the_models_own_forward_is_advised_into_a_module_of_its_own() -> None:
    root = {"op": "max_pool2d", "kind": "selection", "modules": [""], "calls": 1, "probed": False}
    advice = outside_text([root])[1]
    assert advice == ["a winner-take-all built from a max-pool in the forward of the model itself has no smooth "
                      "relaxation here and the model surrogate does not act on the model itself: move it into a "
                      "module of its own called with the tensor as its one argument, name that module for surrogate: "
                      "model (bpda_layers: [NAME]) and add gradient estimation and square"]


def test_a_smooth_bpda_named_on_a_block_building_a_max_pool_gate_inline_relaxes_the_gate_alone() -> None:
    # it passed the gradient straight through the whole block (bpda-straight-through, critical) where it did not read
    # the block's output as a top-k gate of its input, a rule the max-pool gate does not follow; then it was refused
    model = styles.net("pool_max")
    smooth = [PGD_THEN_BPDA[0], {"attack": "bpda", "bpda_layers": ["1"],
                                 "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}}]
    record = run(model, smooth)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped inline"}
    assert [f.code for f in run_checks(record) if f.code in FLAGS + ("bpda-straight-through",)] == []


def test_the_identity_surrogate_named_there_still_runs() -> None:
    model = styles.net("pool_max")
    straight = [PGD_THEN_BPDA[0], {"attack": "bpda", "bpda_layers": ["1"],
                                   "params": {"surrogate": "identity", "inner_params": {"steps": 2}}}]
    assert run(model, straight).result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped inline"}  # the gate alone


# --- a noise probe factory's own TypeError is not "invalid parameters" -------------------------------------------
def test_a_noise_probe_factorys_own_type_error_reads_as_its_other_errors() -> None:
    with NOISE_PROBES.preserved():
        NOISE_PROBES.register("fz", _probe("fz", error=TypeError("unsupported operand type(s) for +: 'int' and 'str'")))
        with pytest.raises(ConfigError) as info:
            EvalConfig.from_dict({**BASE, "noise": [{"kind": "fz"}]})
        # it read "noise[0].params: noise probe 'fz': invalid parameters []: unsupported operand ...", the call fine
        assert str(info.value) == ("noise[0]: noise probe 'fz' raised TypeError: unsupported operand type(s) for +: "
                                   "'int' and 'str'; fix the probe (or its params)")
        with pytest.raises(ConfigError) as info:  # a parameter its signature does not bind: still the params'
            EvalConfig.from_dict({**BASE, "noise": [{"kind": "fz", "params": {"steps": 3}}]})
        assert str(info.value) == "noise[0].params: noise probe 'fz': unknown parameter 'steps'; it takes no parameters"


# --- labels quoted in messages are cut to their start and length -------------------------------------------------
LONG = "m" * 5000


def test_a_matrix_refusal_quotes_a_long_record_label_cut() -> None:
    record = make_record(label=LONG)
    record.model["sweep_cell"] = {"kwta_ratio": "x", "weight_sparsity": 0.5, "pruning_method": "magnitude"}
    with pytest.raises(ConfigError) as info:
        cell_coordinates(record)
    assert str(info.value).startswith(f"table --matrix: record {shown_text(LONG, quoted=True)}: model.sweep_cell is "
                                      "malformed (ValueError: ")
    assert LONG not in str(info.value) and "(5,000 characters)" in str(info.value)


def test_a_budget_check_flag_quotes_a_long_attack_label_cut() -> None:
    plan = _plan()
    plan = dataclasses.replace(plan, result=dataclasses.replace(plan.result, label=LONG))
    flag = judge(plan, list(range(6)), 3200, n=100, seed=7, factor=4, thresholds=Thresholds())
    assert flag.code == "budget-still-lowering"  # the flag whose message names the label twice
    assert LONG not in flag.message and flag.message.count(shown_text(LONG)) == 2
    assert len(flag.message) < 1000
