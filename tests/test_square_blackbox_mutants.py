"""Square and the foolbox wrappers, pinned where a mutation round on ``attacks/square.py`` and
``attacks/blackbox.py`` left mutants alive (every check against an independent computation: torchattacks, foolbox
itself, or points and answers made by hand).

Square against torchattacks, bit for bit: the late, small windows (``p`` down to ``p_init / 512``, Linf side 1, L2
side 3) and ``p_init = 1`` under ``rescale_schedule``; a single sample; three channels; a longer L2 run; flat inputs
(L2 pads them to a 5 × 5 image; the reference runs on that image); bounds other than ``[0, 1]`` (the reference runs
on a model rewritten by hand for ``[0, 1]`` with ``eps / (hi - lo)``). Two bugs this round fixed: a tie the true
class wins by argmax was returned as a success (the reference re-classifies, returns the clean input and attacks the
sample again on the next restart), and L2 with ``p_init`` near 1 on an even-sided image built a window larger than
the image and crashed.

The foolbox wrappers: what :func:`attacks.blackbox.run_foolbox_minimization` does with a minimisation attack's
answer, checked with a stand-in attack whose queries and answer are made by hand (which rows belong to which
sample, foolbox's successes before in-ball queries, ``eps`` and the starting points in the unit view, foolbox
losing its iterates); inputs a rounding outside the bounds; the settings ``HopSkipJump`` and ``Boundary`` hand to
foolbox, and their defaults against foolbox's own; the query cap's per-sample share rounded up and its check on
every attacked sample; the refusal of a model on another device.
"""

from __future__ import annotations

import inspect
import logging

import foolbox as fb
import pytest
import torch
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from attacks.base import AttackConfigError
from attacks.blackbox import (
    Boundary,
    HopSkipJump,
    _InBallAdversarialKeeper,
    _QueryCapReached,
    run_foolbox_minimization,
)
from attacks.thirdparty import UnitInputView
from attack_fixtures import boundary_distance, linear_binary, robust_flags, trained_cnn
from test_attacks_blackbox import _BrightnessThreshold, _DarkDetector
from test_fab_square import reference


# --- Square --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cnn() -> tuple[nn.Module, Tensor, Tensor]:
    model, x, y = trained_cnn("relu")
    return model.requires_grad_(False), x[:24], y[:24]


@pytest.mark.parametrize(("norm", "eps", "p_init"), [("linf", 0.12, 1.0), ("l2", 0.5, 0.85)])
def test_square_small_late_windows_match_the_reference(cnn, norm: str, eps: float, p_init: float) -> None:
    """``rescale_schedule`` maps the 10,000-iteration schedule onto 60 queries: the last iterations use
    ``p = p_init / 512``, a window of ``round(sqrt(64 p)) = 0`` pixels raised to side 1 (Linf) or 3 (L2), which the
    150-query comparisons never reach. ``p_init = 1`` lies in ``(0, 1]``: accepted (Linf: first window the whole
    image). Bit for bit up to float rounding: on an AVX-512 Intel Xeon torch's kernels round one element of two
    samples differently from torchattacks' (1.5e-8, two ulps at 0.12; the same pixels, windows and verdicts), where
    on AMD hosts every bit agrees; a mutant moves a window, a sign or eps, by 1e-3 or more."""
    model, x, y = cnn
    threat = ThreatModel(norm, eps)
    x_adv = create_attack("square", n_queries=60, p_init=p_init, rescale_schedule=True)(model, x, y, threat)
    ref_adv = reference(model, "Square", x, y, threat, n_queries=60, n_restarts=1, p_init=p_init, resc_schedule=True)
    expected = threat.project(ref_adv, x)
    assert float((x_adv - expected).abs().max()) <= 1e-7
    assert torch.equal(robust_flags(model, x_adv, y), robust_flags(model, expected, y))
    robust = robust_flags(model, x_adv, y)
    assert 0 < int(robust.sum()) < int(robust_flags(model, x, y).sum())  # samples left for the last windows


@pytest.mark.parametrize("i", [0, 11])
def test_square_linf_on_a_single_sample_matches_the_reference(cnn, i: int) -> None:
    """A batch of one (or the last sample left): its one changed candidate per iteration is still sent to the
    model, and the sample breaks after some iterations, where the reference breaks it."""
    model, x, y = cnn
    x, y, threat = x[i:i + 1], y[i:i + 1], ThreatModel("linf", 0.12)
    x_adv = create_attack("square", n_queries=60, p_init=1.0, rescale_schedule=True)(model, x, y, threat)
    ref_adv = reference(model, "Square", x, y, threat, n_queries=60, n_restarts=1, p_init=1.0, resc_schedule=True)
    assert torch.equal(x_adv, threat.project(ref_adv, x))
    assert robust_flags(model, x, y).tolist() == [True] and robust_flags(model, x_adv, y).tolist() == [False]


def test_square_l2_longer_run_matches_the_reference_bit_for_bit() -> None:
    """300 queries on 64 digits: rows whose norm rounds a hair above ``eps`` leave no budget to spread (the
    reference's ``max(eps^2 - ||delta||^2, 0)``), never a negative one."""
    model, x, y = trained_cnn("relu")
    x, y, threat = x[:64], y[:64], ThreatModel("l2", 0.5)
    x_adv = create_attack("square", n_queries=300)(model, x, y, threat)
    ref_adv = reference(model, "Square", x, y, threat, n_queries=300, n_restarts=1, p_init=0.8, resc_schedule=False)
    assert torch.equal(x_adv, threat.project(ref_adv, x))
    assert 0 < int(robust_flags(model, x_adv, y).sum()) < int(robust_flags(model, x, y).sum())


def test_square_l2_window_never_outgrows_an_even_sided_image(cnn) -> None:
    """Bug fixed in this round: L2 makes the window side odd, and ``p`` near 1 on an even side rounds to the side
    itself (``round(sqrt(1 · 8 · 8)) = 8``), so the window became 9 × 9 on an 8 × 8 image and the run died with a
    shape error (torchattacks does the same) although ``p_init = 1`` is a valid setting. The side is now the largest
    odd one inside the image (7): the run completes, stays in the ball and breaks samples. ``p_init = 0.8`` gives
    side ``round(sqrt(51.2)) = 7`` too, so up to iteration 10 (``p`` first halves after it) the run is the
    reference's with ``p_init = 0.8``."""
    model, x, y = cnn
    threat = ThreatModel("l2", 0.8)
    x_adv = create_attack("square", n_queries=60, p_init=1.0, rescale_schedule=True)(model, x, y, threat)
    assert bool(threat.contains(x_adv, x).all())
    robust, clean = robust_flags(model, x_adv, y), robust_flags(model, x, y)
    assert int(robust.sum()) < int(clean.sum()) and bool((robust <= clean).all())
    unchanged = (x_adv == x).flatten(1).all(dim=1)
    assert bool((~robust | unchanged).all())  # failures return the clean input
    threat = ThreatModel("l2", 1.2)
    x_adv = create_attack("square", n_queries=11, p_init=1.0)(model, x, y, threat)
    ref_adv = reference(model, "Square", x, y, threat, n_queries=11, n_restarts=1, p_init=0.8, resc_schedule=False)
    assert torch.equal(x_adv, threat.project(ref_adv, x))
    assert int(robust_flags(model, x_adv, y).sum()) < int(clean.sum())


class _FirstFeatures(nn.Module):
    """``model`` of ``d`` features reading the first ``d`` pixels of an image."""

    def __init__(self, model: nn.Module, d: int) -> None:
        super().__init__()
        self.model, self.d = model, d

    def forward(self, v: Tensor) -> Tensor:
        return self.model(v.flatten(1)[:, : self.d])


def _seeded(build, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("l2", 0.5)])
def test_square_on_colour_images_matches_the_reference(norm: str, eps: float) -> None:
    """Three channels (the digits have one): Linf draws a sign per channel, L2 spreads the unspent budget over the
    channels (``/ c``) and draws a sign per sample and channel."""
    model = _seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                          nn.Linear(256, 10)), 0)
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    threat = ThreatModel(norm, eps)
    x_adv = create_attack("square", n_queries=50)(model, x, y, threat)
    ref_adv = reference(model, "Square", x, y, threat, n_queries=50, n_restarts=1, p_init=0.8, resc_schedule=False)
    assert torch.equal(x_adv, threat.project(ref_adv, x))
    assert 0 < int(robust_flags(model, x_adv, y).sum()) < len(y)


def test_square_l2_on_flat_inputs_pads_them_to_a_five_pixel_square() -> None:
    """Six features, not an image: L2 needs a side of at least 5 (squares of side ``h // 5``), so the input is the
    top-left of a zero-padded 5 × 5 image. The reference, run on that padded image with a model that reads the first
    six pixels, returns the same six features."""
    linear = _seeded(lambda: nn.Linear(6, 3), 1)
    x = torch.rand(10, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = linear(x).argmax(dim=1)
    threat = ThreatModel("l2", 0.1)
    x_adv = create_attack("square", n_queries=50)(linear, x, y, threat)
    padded = torch.zeros(10, 1, 5, 5)
    padded.view(10, -1)[:, :6] = x
    ref_adv = reference(_FirstFeatures(linear, 6), "Square", padded, y, threat, n_queries=50, n_restarts=1, p_init=0.8,
                        resc_schedule=False)
    assert torch.equal(x_adv, threat.project(ref_adv.flatten(1)[:, :6], x))
    assert 0 < int(robust_flags(linear, x_adv, y).sum()) < len(y)


class _MeanSteps(nn.Module):
    """Three classes, piecewise constant in the mean pixel ``t`` and the mean ``r`` of the right half:
    ``[1, 1.1, -10]`` (class 1) once ``r >= 0.37``, else ``[1, 0.9, 0.9]`` (class 0 by 0.1) for ``t < 0.33`` and
    ``[1, 1, -10]`` above (an exact tie of classes 0 and 1, which argmax gives to class 0). ``flip`` reverses the
    classes: class 2 first, then a tie of 1 and 2 that argmax gives to 1."""

    def __init__(self, flip: bool = False) -> None:
        super().__init__()
        self.flip = flip

    def forward(self, x: Tensor) -> Tensor:
        t, r = x.flatten(1).mean(dim=1, keepdim=True), x[..., 4:].flatten(1).mean(dim=1, keepdim=True)
        below, tie, over = (torch.tensor(z) for z in ([1.0, 0.9, 0.9], [1.0, 1.0, -10.0], [1.0, 1.1, -10.0]))
        z = torch.where(r >= 0.37, over, torch.where(t < 0.33, below, tie))
        return z.flip(1) if self.flip else z


@pytest.mark.parametrize(("loss", "restarts", "label"), [("margin", 2, 0), ("ce", 2, 0), ("margin", 1, 2)])
def test_square_a_tie_won_by_the_true_class_is_not_a_success(loss: str, restarts: int, label: int) -> None:
    """Bug fixed in this round: margin 0 stops a sample's run (the reference's ``margin > 0`` test), but the
    reference re-classifies its output, and a tie the true class wins by argmax is not misclassified: the sample
    gets the clean input back and the next restart attacks it again. Square returned the tie point and retired
    the sample, so with restarts it reported samples robust that the reference breaks. Under ``-CE`` a tie is no
    lower loss than the start here (CE log 2 against 1.03), so it is kept only for its margin ``<= 0`` (and stops
    the run, where the right half could still have been raised to class 1). A tie argmax gives to another class
    (label 2 of the flipped model) is a success."""
    x = 0.29 + 0.02 * torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y, model, threat = torch.full((12,), label), _MeanSteps(flip=label == 2), ThreatModel("linf", 0.1)
    x_adv = create_attack("square", n_queries=30, loss=loss, restarts=restarts)(model, x, y, threat)
    ref_adv = reference(model, "Square", x, y, threat, n_queries=30, n_restarts=restarts, p_init=0.8, loss=loss,
                        resc_schedule=False)
    assert torch.equal(x_adv, threat.project(ref_adv, x))
    robust = robust_flags(model, x_adv, y)
    assert int(robust.sum()) < len(y)
    assert bool(robust.any()) == (label == 0)  # ties count for the true class only when argmax gives them to it
    assert torch.equal(x_adv[robust], x[robust])  # not fooled: the clean input, never the tie point


class _FromUnit(nn.Module):
    """``model`` shown inputs in ``[0, 1]``: ``v ↦ model(lo + v · (hi - lo))`` (written out here)."""

    def __init__(self, model: nn.Module, lo: float, hi: float) -> None:
        super().__init__()
        self.model, self.lo, self.hi = model, lo, hi

    def forward(self, v: Tensor) -> Tensor:
        return self.model(self.lo + v * (self.hi - self.lo))


class _ToUnit(nn.Module):
    """``model`` (trained on ``[0, 1]``) used on inputs in ``[lo, hi]``: ``x ↦ model((x - lo) / (hi - lo))``."""

    def __init__(self, model: nn.Module, lo: float, hi: float) -> None:
        super().__init__()
        self.model, self.lo, self.hi = model, lo, hi

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.lo) / (self.hi - self.lo))


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.24), ("l2", 1.6)])
def test_square_on_bounds_other_than_unit_matches_the_reference_on_the_rescaled_problem(cnn, norm, eps) -> None:
    """On inputs in ``[-1, 1]`` the search is the reference's in ``[0, 1]`` coordinates with ``eps / 2``."""
    base, x01, y = cnn
    lo, hi = -1.0, 1.0
    model = _ToUnit(base, lo, hi).eval()
    x = lo + x01 * (hi - lo)
    threat = ThreatModel(norm, eps, bounds=(lo, hi))
    x_adv = create_attack("square", n_queries=80)(model, x, y, threat)
    unit = _FromUnit(model, lo, hi).eval()
    ref_unit = reference(unit, "Square", (x - lo) / (hi - lo), y, ThreatModel(norm, eps / (hi - lo)), n_queries=80,
                         n_restarts=1, p_init=0.8, resc_schedule=False)
    assert torch.equal(x_adv, threat.project(lo + ref_unit * (hi - lo), x))
    robust = robust_flags(model, x_adv, y)
    assert 0 < int(robust.sum()) < int(robust_flags(model, x, y).sum())


# --- the foolbox wrappers ------------------------------------------------------------------------------------------
class _StandIn:
    """A foolbox minimisation attack made by hand: records what it is given, sends ``queries(inputs)`` through
    foolbox's model (one row per attacked sample, like foolbox's own probes) and answers ``answer(inputs)`` as
    ``(raw, clipped, success)``."""

    def __init__(self, queries, answer) -> None:
        self.queries, self.answer = queries, answer
        self.calls: list[dict] = []

    def __call__(self, fmodel, inputs: Tensor, criterion, epsilons: float, starting_points: Tensor):
        self.calls.append({"inputs": inputs.clone(), "epsilons": epsilons, "starting_points": starting_points})
        for query in self.queries(inputs):
            fmodel(query)
        clipped, success = self.answer(inputs)
        return clipped, clipped, success


def _dark_batch() -> tuple[nn.Module, Tensor, Tensor]:
    """One bright sample (class 0: no starting point exists) before two dark ones (class 1: easy to break): the
    attack runs on samples 1 and 2 only, as rows 0 and 1. ``eps`` (L2) 0.25 lies below every query of the start
    search (its first blend, a tenth of the way to uniform noise, is about 0.45 away)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([0.5 + 0.5 * torch.rand(1, 1, 8, 8, generator=gen), 0.05 * torch.rand(2, 1, 8, 8, generator=gen)])
    return _DarkDetector().eval(), x, torch.tensor([0, 1, 1]), ThreatModel("l2", 0.25)


def _brighter(x: Tensor, value: float) -> Tensor:
    """``x`` with pixel (0, 0) set to ``value``: class 0 for the dark detector once ``value >= 0.1``."""
    out = x.clone()
    out[:, 0, 0, 0] = value
    return out


def test_rows_of_the_attack_belong_to_the_samples_it_attacks() -> None:
    """The attack's row 0 is sample 1 (sample 0 has no start): its in-ball adversarial query is returned for
    sample 1, not read as sample 0's; row 1's query lies outside the ball, so sample 2 keeps its clean input."""
    model, x, y, threat = _dark_batch()
    probe = torch.stack([_brighter(x[1:2], 0.2)[0], x[2] + 0.5])  # sample 1: distance < 0.2; sample 2: 4.0
    stand_in = _StandIn(lambda inputs: [probe], lambda inputs: (inputs, torch.tensor([False, False])))
    x_adv = run_foolbox_minimization("stand-in", stand_in, model, x, y, threat, 0, 20, 10)
    assert torch.equal(stand_in.calls[0]["inputs"], x[1:])  # attacked: the two dark samples
    assert torch.equal(x_adv[0], x[0]) and torch.equal(x_adv[2], x[2])
    assert torch.equal(x_adv[1], probe[0])
    assert robust_flags(model, x_adv, y).tolist() == [True, False, True]


def test_foolbox_successes_win_over_earlier_in_ball_queries() -> None:
    """Sample 1: foolbox reports success with its own (smaller) adversarial; an earlier in-ball query of the
    attack must not replace it. Sample 2: foolbox fails, the in-ball query is returned."""
    model, x, y, threat = _dark_batch()
    probe = torch.stack([_brighter(x[1:2], 0.2)[0], _brighter(x[2:3], 0.22)[0]])
    minimal = _brighter(x[1:2], 0.11)[0]

    def answer(inputs: Tensor) -> tuple[Tensor, Tensor]:
        return torch.stack([minimal, inputs[1]]), torch.tensor([True, False])

    x_adv = run_foolbox_minimization("stand-in", _StandIn(lambda inputs: [probe], answer), model, x, y, threat, 0,
                                     20, 10)
    assert torch.equal(x_adv[1], minimal) and torch.equal(x_adv[2], probe[1]) and torch.equal(x_adv[0], x[0])


def test_foolbox_gets_eps_and_starting_points_in_its_unit_view() -> None:
    """Inputs in ``[0, 2]``: foolbox sees ``x / 2`` and ``eps / 2``; the starting points it is given are the start
    search's adversarials for exactly the attacked samples (class 0 for the dark detector)."""
    model, x01, y, unit_threat = _dark_batch()
    lo, hi = 0.0, 2.0
    x = x01 * (hi - lo) + lo
    stand_in = _StandIn(lambda inputs: [], lambda inputs: (inputs, torch.tensor([False, False])))
    x_adv = run_foolbox_minimization("stand-in", stand_in, _ToUnit(model, lo, hi), x, y,
                                     ThreatModel("l2", unit_threat.eps * (hi - lo), bounds=(lo, hi)), 0, 20, 10)
    call = stand_in.calls[0]
    assert call["epsilons"] == pytest.approx(unit_threat.eps)
    assert torch.allclose(call["inputs"], x01[1:])
    starts = call["starting_points"]
    assert starts is not None and starts.shape == x01[1:].shape
    assert robust_flags(model, starts, y[1:]).tolist() == [False, False]
    assert torch.equal(x_adv, x)  # foolbox failed and no query was adversarial in the ball


def test_foolbox_losing_its_iterates_gives_clean_inputs_and_a_warning(caplog) -> None:
    """foolbox asserts its iterates stay adversarial, which fails only for a randomized model: the attacked samples
    keep the clean input and the count is logged, the error does not escape."""
    model, x, y, threat = _dark_batch()

    def lose(inputs: Tensor):
        raise AssertionError

    with caplog.at_level(logging.WARNING, logger="attacks.blackbox"):
        x_adv = run_foolbox_minimization("stand-in", _StandIn(lambda inputs: [], lose), model, x, y, threat, 0, 20, 10)
    assert torch.equal(x_adv, x)
    assert "stand-in: foolbox lost adversarial iterates (is the model randomized?); 2 samples keep" in caplog.text


@pytest.mark.parametrize("name", ["hopskipjump", "boundary"])
def test_inputs_a_rounding_outside_the_bounds_are_attacked(name: str) -> None:
    """The entry check lets inputs lie up to 1e-6 outside the bounds (rounding of a data pipeline); foolbox asserts
    its inputs lie inside its own ``[0, 1]``, so they are clipped there before foolbox sees them."""
    model, x, y = linear_binary(n=6)
    x = x.clone()
    x[:, 0, 0, 0] = 1.0 + 2 ** -21  # 4.8e-7 above the upper bound
    threat = ThreatModel("l2", 10 * float(boundary_distance(model, x, y, "l2").max()))
    x_adv = create_attack(name, steps=2, init_directions=20, init_steps=10)(model, x, y, threat)
    assert bool(threat.contains(x_adv, x).all())
    assert not bool(robust_flags(model, x_adv, y).any())  # every boundary lies well inside the ball


@pytest.mark.parametrize("name", ["hopskipjump", "boundary"])
def test_the_seed_picks_foolboxs_random_draws(name: str) -> None:
    """The start search and the attack draw from foolbox's global generator, seeded with ``seed``: the same seed
    repeats the run, another seed gives other adversarials (minimal perturbations found from other starts)."""
    model, x, y = linear_binary(n=6)
    threat = ThreatModel("l2", 10 * float(boundary_distance(model, x, y, "l2").max()))
    runs = [create_attack(name, steps=3, init_directions=20, init_steps=10, seed=seed)(model, x, y, threat)
            for seed in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1])
    assert not bool((runs[0] == runs[2]).flatten(1).all(dim=1).any())  # every sample moved elsewhere
    assert not bool(robust_flags(model, runs[2], y).any())


def _recording(monkeypatch, name: str) -> list[dict]:
    """Replace ``foolbox.attacks.<name>`` by a subclass that records its keyword arguments."""
    seen: list[dict] = []
    original = getattr(fb.attacks, name)

    class Recorded(original):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs) -> None:
            seen.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(fb.attacks, name, Recorded)
    return seen


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_hopskipjump_hands_its_settings_and_the_threat_norm_to_foolbox(monkeypatch, norm: str) -> None:
    seen = _recording(monkeypatch, "HopSkipJumpAttack")
    init = _recording(monkeypatch, "LinearSearchBlendedUniformNoiseAttack")
    model, x, y = linear_binary(n=4)
    HopSkipJump(steps=1, initial_gradient_eval_steps=7, max_gradient_eval_steps=9, gamma=2.5,
                stepsize_search="grid_search", init_directions=13, init_steps=11)(model, x, y, ThreatModel(norm, 0.1))
    assert seen == [{"steps": 1, "initial_gradient_eval_steps": 7, "max_gradient_eval_steps": 9,
                     "stepsize_search": "grid_search", "gamma": 2.5, "constraint": norm}]
    assert init == [{"directions": 13, "steps": 11}]


def test_boundary_hands_its_settings_to_foolbox(monkeypatch) -> None:
    seen = _recording(monkeypatch, "BoundaryAttack")
    model, x, y = linear_binary(n=4)
    Boundary(steps=3, spherical_step=0.03, source_step=0.02, source_step_convergance=1e-5, step_adaptation=1.25,
             update_stats_every_k=4, init_directions=20, init_steps=10)(model, x, y, ThreatModel("l2", 0.5))
    assert seen == [{"steps": 3, "spherical_step": 0.03, "source_step": 0.02, "source_step_convergance": 1e-5,
                     "step_adaptation": 1.25, "update_stats_every_k": 4}]


def _signature_defaults(cls) -> dict:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_defaults_are_foolboxs_own(monkeypatch) -> None:
    """The docstrings call the budgets foolbox's (the reference) defaults; the start search is the one foolbox's
    HopSkipJump falls back to when given no starting points (read off a run of foolbox itself)."""
    hsj, boundary = _signature_defaults(fb.attacks.HopSkipJumpAttack), _signature_defaults(fb.attacks.BoundaryAttack)
    ours_hsj, ours_boundary = HopSkipJump(), Boundary()
    for field in ("steps", "initial_gradient_eval_steps", "max_gradient_eval_steps", "stepsize_search", "gamma"):
        assert getattr(ours_hsj, field) == hsj[field], field
    for field in ("steps", "spherical_step", "source_step", "source_step_convergance", "step_adaptation",
                  "update_stats_every_k"):
        assert getattr(ours_boundary, field) == boundary[field], field
    fallback = _signature_defaults(fb.attacks.LinearSearchBlendedUniformNoiseAttack)
    init = _recording(monkeypatch, "LinearSearchBlendedUniformNoiseAttack")
    monkeypatch.setattr(fb.attacks.hop_skip_jump, "LinearSearchBlendedUniformNoiseAttack",
                        fb.attacks.LinearSearchBlendedUniformNoiseAttack)
    model, x, y = linear_binary(n=2)
    fb.attacks.HopSkipJumpAttack(steps=1, max_gradient_eval_steps=5)(
        fb.PyTorchModel(model, bounds=(0.0, 1.0)), x, fb.criteria.Misclassification(y), epsilons=None)
    assert len(init) == 1
    fallback.update(init[0])
    assert (ours_hsj.init_directions, ours_hsj.init_steps) == (fallback["directions"], fallback["steps"])
    assert (ours_boundary.init_directions, ours_boundary.init_steps) == (fallback["directions"], fallback["steps"])


def test_the_query_cap_rounds_each_share_up_and_checks_every_attacked_sample() -> None:
    x, y = torch.full((3, 1, 4, 4), 0.4), torch.zeros(3, dtype=torch.long)
    keeper = _InBallAdversarialKeeper(UnitInputView(_BrightnessThreshold(), (1, 4, 4), (0.0, 1.0)), x, y,
                                      ThreatModel("linf", 0.2), max_queries=5)
    keeper(torch.cat([x, x[:1]]))  # four rows for three samples: ceil(4 / 3) = 2 each
    assert keeper.spent == [2, 2, 2]
    keeper.attack_only(torch.tensor([2]))
    for _ in range(3):
        keeper(x[:1])
    assert keeper.spent == [2, 2, 5]
    keeper.attack_only(torch.tensor([0, 2]))
    with pytest.raises(_QueryCapReached):
        keeper(x[:2])  # sample 0 has room, sample 2 does not: the query is not made
    assert keeper.spent == [2, 2, 5]


class _BufferElsewhere(nn.Module):
    """A linear model whose unused buffer lives on the ``meta`` device (stands for a model on another GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = linear_binary(n=1)[0]
        self.register_buffer("elsewhere", torch.zeros(1, device="meta"))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


@pytest.mark.parametrize("name", ["hopskipjump", "boundary"])
def test_a_model_on_another_device_is_refused_not_moved(name: str) -> None:
    _, x, y = linear_binary(n=3)
    model = _BufferElsewhere()
    with pytest.raises(AttackConfigError, match=f"attack '{name}': model is on meta but x is on cpu"):
        create_attack(name, steps=1, init_directions=5, init_steps=5)(model, x, y, ThreatModel("l2", 0.5))
    assert model.elsewhere.device.type == "meta"
