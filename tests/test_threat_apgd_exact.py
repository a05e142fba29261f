"""The threat-model maths, the margin and DLR losses and APGD's schedule against independent computations: closed
forms and brute force on small hand tensors, the formulas of Croce & Hein (ICML 2020) written out here (kills the
surviving mutants of a mutation round on attacks/base.py, attacks/gradient.py and attacks/apgd.py)."""

from __future__ import annotations

import math
from itertools import permutations

import pytest
import torch
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from attacks.apgd import apgd_single_run, dlr_loss, reference_start, targeted_dlr_loss
from attacks.base import AttackConfigError, format_eps, margin_loss, parse_eps

# --- eps parsing and formatting --------------------------------------------------------------------------------


def test_parse_eps_by_hand() -> None:
    assert parse_eps("8/255") == 8 / 255 and parse_eps(" 1 / 4 ") == 0.25 and parse_eps("3e-1") == 0.3
    assert parse_eps(0) == 0.0
    for bad in (True, float("nan"), float("inf"), "inf", -0.1, "-1/255", "8/", "a"):
        with pytest.raises(AttackConfigError):
            parse_eps(bad)


def test_format_eps_by_hand() -> None:
    assert [format_eps(v) for v in (8 / 255, 1 / 255, 255 / 255, 0.0, -0.0)] == ["8/255", "1/255", "1", "0", "0"]
    assert format_eps(0.0314) == "0.0314"  # 0.0314 is 8.007/255: not a multiple of 1/255
    assert format_eps(8 / 255 + 1e-6) == "0.0313735"  # nearest fraction 8/255, but 1e-6 away: no multiple either
    assert format_eps(0.1234567) == "0.123457" and format_eps(0.3) == "0.3"


def test_threat_model_refuses_empty_or_reversed_bounds() -> None:
    assert ThreatModel("linf", "8/255", (-1, 1)).bounds == (-1.0, 1.0)
    for bounds in ((0.5, 0.5), (1.0, 0.0)):
        with pytest.raises(AttackConfigError):
            ThreatModel("linf", 0.1, bounds)


# --- projection, random start, step ----------------------------------------------------------------------------


def _brute_linf(x_adv: Tensor, x: Tensor, eps: float, lo: float, hi: float) -> Tensor:
    """Element by element: the nearest point of [x - eps, x + eps] ∩ [lo, hi] (an interval per coordinate)."""
    out = x_adv.clone().flatten()
    for i, (a, c) in enumerate(zip(x_adv.flatten().tolist(), x.flatten().tolist())):
        low, high = max(c - eps, lo), min(c + eps, hi)
        out[i] = low if a < low else high if a > high else a
    return out.view_as(x_adv)


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 2.0)])
def test_linf_projection_is_the_per_coordinate_nearest_point(bounds: tuple[float, float]) -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 2, 2, 2) * (bounds[1] - bounds[0]) + bounds[0]
    x_adv = x + torch.randn_like(x)
    threat = ThreatModel("linf", 0.2, bounds)
    assert torch.allclose(threat.project(x_adv, x), _brute_linf(x_adv, x, 0.2, *bounds), atol=1e-7)


def test_l2_projection_by_hand() -> None:
    """Per sample over every non-batch dim: a 3-4-5 triangle scaled to the radius; a point inside is kept; the bounds
    clip after the scaling."""
    threat = ThreatModel("l2", 0.1)
    x = torch.full((3, 1, 1, 2), 0.5)
    x_adv = x + torch.tensor([[[[0.3, 0.4]]], [[[0.03, -0.04]]], [[[0.0, 4.0]]]])
    expected = torch.tensor([[[[0.56, 0.58]]], [[[0.53, 0.46]]], [[[0.5, 0.6]]]])
    assert torch.allclose(threat.project(x_adv, x), expected, atol=1e-6)
    edge = torch.tensor([[0.98, 0.5]])
    assert torch.allclose(threat.project(edge + torch.tensor([[0.6, 0.8]]), edge), torch.tensor([[1.0, 0.58]]))


def test_l2_maths_takes_the_norm_over_every_non_batch_dim() -> None:
    """On [N, C, H, W] with C > 1, brute force per sample over all C * H * W numbers: distance, projection (x = 0.5,
    far from the bounds), direction and step."""
    torch.manual_seed(0)
    threat = ThreatModel("l2", 0.1)
    x = torch.full((3, 2, 2, 2), 0.5, dtype=torch.float64)
    delta = 0.2 * torch.randn(3, 2, 2, 2, dtype=torch.float64) * torch.tensor([1.0, 0.05, 1.0]).view(3, 1, 1, 1)
    norms = [math.sqrt(sum(v * v for v in row.flatten().tolist())) for row in delta]
    assert norms[1] < 0.1 < min(norms[0], norms[2])  # one row inside the ball, two outside
    assert torch.allclose(threat.distance(x + delta, x), torch.tensor(norms, dtype=torch.float64))
    projected = torch.stack([x[i] + delta[i] * min(1.0, 0.1 / norms[i]) for i in range(3)])
    assert torch.allclose(threat.project(x + delta, x), projected)
    unit = torch.stack([delta[i] / norms[i] for i in range(3)])
    assert torch.allclose(threat.direction(delta), unit)
    assert torch.allclose(threat.step(x, delta, 0.05), x + 0.05 * unit)
    from attacks.apgd import _l2
    assert torch.allclose(_l2(delta).flatten(), torch.tensor(norms, dtype=torch.float64))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_fills_the_ball_on_both_sides(norm: str) -> None:
    """Uniform in the ball around x: coordinates move both ways, centred on x, and the start is clipped to the
    bounds (x at the lower bound: never below it)."""
    threat = ThreatModel(norm, 0.2)
    x = torch.full((2000, 4), 0.5)
    delta = threat.random_start(x, torch.Generator().manual_seed(0)) - x
    assert abs(float(delta.mean())) < 0.01
    assert float(delta.min()) < -0.1 and float(delta.max()) > 0.1
    low = threat.random_start(torch.zeros(50, 4), torch.Generator().manual_seed(0))
    assert float(low.min()) >= 0.0 and float(low.max()) > 0.05


def test_l2_random_start_direction_is_gaussian_not_uniform() -> None:
    """The L2 start's direction is isotropic: as often in the negative orthant as in the positive one."""
    threat = ThreatModel("l2", 0.2)
    x = torch.full((4000, 2), 0.5)
    delta = threat.random_start(x, torch.Generator().manual_seed(0)) - x
    negative = float(((delta < 0).all(dim=1)).float().mean())
    assert abs(negative - 0.25) < 0.03


# --- losses by hand --------------------------------------------------------------------------------------------


def test_margin_loss_by_hand() -> None:
    logits = torch.tensor([[3.0, -1.0, 2.0], [-5.0, -7.0, -6.0], [0.0, 4.0, 1.0]])
    y = torch.tensor([0, 0, 0])
    # max over the other classes minus the true one: 2 - 3, -6 - -5, 4 - 0 (all-negative rows: not 0)
    assert torch.equal(margin_loss(logits, y), torch.tensor([-1.0, -1.0, 4.0]))


def _dlr_by_hand(z: list[float], y: int) -> float:
    """Croce & Hein, eq. (5): DLR = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), z sorted decreasingly."""
    top = sorted(z, reverse=True)
    return -(z[y] - max(v for i, v in enumerate(z) if i != y)) / (top[0] - top[2])


def _targeted_dlr_by_hand(z: list[float], y: int, t: int) -> float:
    """Croce & Hein, eq. (6): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    top = sorted(z, reverse=True)
    return -(z[y] - z[t]) / (top[0] - (top[2] + top[3]) / 2)


def test_dlr_losses_against_the_papers_formulas() -> None:
    base = [4.0, 1.0, -2.0, 0.5, 3.0]
    rows = [list(p) for p in permutations(base)][::7]
    logits = torch.tensor(rows, dtype=torch.float64)
    for y in range(5):
        labels = torch.full((len(rows),), y)
        expected = torch.tensor([_dlr_by_hand(r, y) for r in rows], dtype=torch.float64)
        assert torch.allclose(dlr_loss(logits, labels), expected, atol=1e-9)
        for t in range(5):
            target = torch.full((len(rows),), t)
            exp_t = torch.tensor([_targeted_dlr_by_hand(r, y, t) for r in rows], dtype=torch.float64)
            assert torch.allclose(targeted_dlr_loss(logits, labels, target), exp_t, atol=1e-9)


# --- APGD's schedule, momentum and best point ------------------------------------------------------------------


class _Recorder(nn.Module):
    """Logits ``[x_0, 10]`` of ``[N, 1]`` inputs (class 1 always wins: nothing is ever misclassified), recording every
    input it is called on."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return torch.cat([x, torch.full_like(x, 10.0)], dim=1)


def _paper_checkpoints(n: int) -> list[int]:
    """Croce & Hein, sec. 3.2: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06);
    w_j = ceil(p_j n)."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return [math.ceil(round(q * n, 9)) for q in p[1:]]


def _autoattack_checkpoints(n: int) -> list[int]:
    """AutoAttack's ``autopgd_base``: intervals ``int(0.22 n)``, then ``int(0.03 n)`` shorter, at least ``int(0.06 n)``
    (each at least 1). The paper's schedule for every n a multiple of 100; apart from it elsewhere (n = 50: the
    decrease 1.5 truncated to 1), where this module follows the reference code."""
    interval, low, decrease = max(int(0.22 * n), 1), max(int(0.06 * n), 1), max(int(0.03 * n), 1)
    out = [interval]
    while out[-1] + max(interval - decrease, low) <= n:
        interval = max(interval - decrease, low)
        out.append(out[-1] + interval)
    return out


def _run(values: list[float] | None, steps: int, rho: float, initial_step: float = 0.02,
         eps: float = 0.1, outward: frozenset[int] = frozenset()) -> tuple[_Recorder, Tensor, Tensor, Tensor]:
    """One sample, one feature at 0.5: APGD (Linf) with a loss of gradient +-1 pointing inwards from the start (on the
    sphere), whose value is ``values[call]`` (or the linear loss itself) and whose gradient points outwards at the
    calls in ``outward``; returns the model, start, direction and output."""
    x = torch.full((1, 1), 0.5, dtype=torch.float64)
    threat = ThreatModel("linf", eps)
    start = reference_start(x, threat, torch.Generator().manual_seed(0))
    d = -torch.sign(start - x)
    calls = []

    def loss(z: Tensor, y: Tensor, index: Tensor) -> Tensor:
        linear = z[:, 0] * d[index, 0]
        if values is None:
            return linear
        calls.append(None)
        sign = -1.0 if len(calls) - 1 in outward else 1.0
        return sign * (linear - linear.detach()) + values[len(calls) - 1]

    model = _Recorder()
    out, fooled = apgd_single_run(model, x, torch.ones(1, dtype=torch.long), threat, loss, steps, rho,
                                  torch.Generator().manual_seed(0), initial_step)
    assert not bool(fooled.any()) and torch.equal(model.seen[0], start)
    return model, start, d, out


@pytest.mark.parametrize(("steps", "rho"), [(100, 2.0), (200, 2.0), (50, 2.0), (100, 0.0)])
def test_apgd_trajectory_follows_the_papers_checkpoints_momentum_and_halving(steps: int, rho: float) -> None:
    """The loss rises every step and rho 2 makes every checkpoint halve the step (the best point is the current one,
    so nothing is reset): the iterates are x^(1) = x^(0) + eta, x^(k+1) = x^(k) + 0.75 eta_k + 0.25 (x^(k) -
    x^(k-1)), with eta_k halved once per checkpoint w_j <= k of the paper's schedule (AutoAttack checks after the
    w_j-th iterate), eta_0 = initial_step * eps. With rho 0 (and the best loss rising) the step is never halved."""
    model, start, d, _ = _run(None, steps, rho=rho, initial_step=1.0 / steps)
    moved = [float(((s - start) * d).squeeze()) for s in model.seen]
    checkpoints = _paper_checkpoints(steps) if steps % 100 == 0 else _autoattack_checkpoints(steps)
    assert (checkpoints == _paper_checkpoints(steps)) == (steps % 100 == 0)
    eta0 = 0.1 / steps
    expected = [0.0, eta0]
    for k in range(1, steps):
        eta = eta0 / 2 ** sum(w <= k for w in checkpoints) if rho else eta0
        expected.append(expected[k] + 0.75 * eta + 0.25 * (expected[k] - expected[k - 1]))
    assert len(moved) == steps + 1
    assert max(abs(a - b) for a, b in zip(moved, expected)) < 1e-12
    assert checkpoints[:2] == {100: [22, 41], 200: [44, 82], 50: [11, 21]}[steps]


def _values_with_increases(m: int, n: int = 22, first: float = 1.0) -> list[float]:
    """``n`` loss values, all below 100, starting at ``first``, of which exactly ``m`` rise over the previous one,
    the first counting as a rise over 0 (AutoAttack's loss history starts as zeros)."""
    vals, v = [first], first
    for i in range(1, n):
        v = v + 0.01 if i < m else v - 0.01  # the first value counts as one rise: m - 1 more rises, then falls
        vals.append(v)
    return vals


def _jumped_back(model: _Recorder, start: Tensor, d: Tensor, after: int) -> bool:
    """Whether the iterate after checkpoint ``after`` went back towards the start (reset to the best point)."""
    pos = [float(((s - start) * d).squeeze()) for s in model.seen]
    return pos[after + 1] < pos[after]


@pytest.mark.parametrize(("m", "rho", "first", "halved"), [
    (11, 0.5, 1.0, True),    # 11 <= 0.5 * 22: condition 1 (AutoAttack: <=)
    (12, 0.5, 1.0, False),   # 12 rises of 22: the step is kept
    (12, 0.5, -1.0, True),   # a first value below 0 is no rise: 11
    (12, 0.5, 50.0, False),  # a first value above 0 is a rise even though below the start's 100
])
def test_apgd_first_checkpoint_condition_one(m: int, rho: float, first: float, halved: bool) -> None:
    """The start's loss 100 stays the best; at the first checkpoint (iteration 22 of 100) the step is halved and the
    iterate sent back to the best point iff at most rho * 22 of the 22 steps raised the loss."""
    values = [100.0] + _values_with_increases(m, first=first) + [0.0] * 80
    model, start, d, out = _run(values, 100, rho)
    assert _jumped_back(model, start, d, 22) == halved
    assert not _jumped_back(model, start, d, 21)
    assert torch.equal(out, start)  # the best point: the start


def test_apgd_equal_losses_are_no_rise() -> None:
    values = [100.0, 1.0] + [1.0] * 10 + [0.5] * 11 + [0.0] * 80  # 1 rise (over 0), then ties and one fall
    model, start, d, _ = _run(values, 100, rho=0.05)  # 1 <= 1.1: halved; ties counted as rises would not be
    assert _jumped_back(model, start, d, 22)


@pytest.mark.parametrize(("improve", "halved"), [(False, True), (True, False)])
def test_apgd_second_checkpoint_condition_two(improve: bool, halved: bool) -> None:
    """Not halved at the first checkpoint (every step rose) and no improvement of the best loss since: halved at the
    second (iteration 41); one value above the best in between: kept."""
    first = [100.0] + [1.0 + 0.01 * i for i in range(22)]
    second = [2.0 + 0.01 * i for i in range(19)]
    if improve:
        second[5] = 150.0
    model, start, d, _ = _run(first + second + [0.0] * 60, 100, rho=0.75)
    assert not _jumped_back(model, start, d, 22)
    assert _jumped_back(model, start, d, 41) == halved


def test_apgd_condition_two_compares_with_the_best_loss_at_the_last_checkpoint() -> None:
    """The best loss rose before the first checkpoint (not halved: every step rose) and not between the first and the
    second: halved at the second, though the best is above the start's loss."""
    first = [100.0] + [1.0 + 0.01 * i for i in range(22)]
    first[10] = 150.0
    second = [2.0 + 0.01 * i for i in range(19)]
    model, start, d, _ = _run(first + second + [0.0] * 60, 100, rho=0.75)
    assert not _jumped_back(model, start, d, 22)
    assert _jumped_back(model, start, d, 41)


def test_apgd_restarts_a_halved_step_from_the_best_point_with_its_gradient() -> None:
    """Halved at the first checkpoint with the best point x^(21), whose gradient points outwards: x^(23) is one
    halved step from x^(21) (momentum term 0: the reset point is the previous one) along that gradient."""
    values = [100.0] + [0.0] * 20 + [200.0, 0.0] + [0.0] * 80
    model, start, d, out = _run(values, 100, rho=0.75, outward=frozenset({21}))
    pos = [float(((s - start) * d).squeeze()) for s in model.seen]
    assert math.isclose(pos[23], pos[21] - 0.75 * 0.002 / 2, rel_tol=0, abs_tol=1e-12)
    assert torch.equal(out, model.seen[21])


def test_apgd_returns_a_misclassified_start() -> None:
    """The random start is the first iterate: misclassified there, it is returned (and the sample fooled) even
    though every later iterate is classified correctly."""
    x = torch.full((1, 1), 0.5, dtype=torch.float64)
    threat = ThreatModel("linf", 0.1)
    side = torch.sign(reference_start(x, threat, torch.Generator().manual_seed(0)) - x)

    class Outside(nn.Module):  # class 0 wins once x moved 0.05 towards the start's side
        def forward(self, z: Tensor) -> Tensor:
            return torch.cat([(z - 0.5) * side, torch.full_like(z, 0.05)], dim=1)

    out, fooled = apgd_single_run(Outside(), x, torch.ones(1, dtype=torch.long), threat,
                                  lambda z, y, index: -z[:, 0], 5, 0.75, torch.Generator().manual_seed(0))
    assert bool(fooled.all()) and torch.allclose(out, x + 0.1 * side)


def test_apgd_returns_the_first_highest_loss_iterate() -> None:
    """A sample never misclassified gets its highest-loss iterate back, the first of equal ones (strict >)."""
    values = [0.0] * 30 + [200.0] + [0.0] * 4 + [200.0] + [0.0] * 20
    model, _, _, out = _run(values, 50, rho=0.75)
    assert torch.equal(out, model.seen[30])


# --- PGD and FGSM ----------------------------------------------------------------------------------------------


def test_pgd_default_step_is_2_5_eps_over_steps() -> None:
    """Madry et al.'s step 2.5 eps / steps: the first step of every start not yet at the ball's edge."""
    model = _Recorder()
    x = torch.full((64, 1), 0.5, dtype=torch.float64)
    create_attack("pgd", steps=10)(model, x, torch.ones(64, dtype=torch.long), ThreatModel("linf", 0.1))
    start, first = model.seen[1], model.seen[2]  # seen[0]: the clean forward of the entry checks
    inner = start[:, 0] < 0.6 - 0.025
    assert int(inner.sum()) > 10
    assert torch.allclose(first[inner] - start[inner], torch.full_like(first[inner], 0.025), atol=1e-12)


class _Crossing(nn.Module):
    """Logits ``[10, x, 2 - 4x]`` of ``[N, 1]`` inputs: at x = 0.5 the CW margin rises with x (class 1 is the runner-up)
    while the cross-entropy rises as x falls (class 2's slope dominates): the two losses step opposite ways."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([torch.full_like(x, 10.0), x, 2 - 4 * x], dim=1)


def test_per_sample_losses_by_hand() -> None:
    from attacks.gradient import per_sample_loss

    logits = torch.tensor([[2.0, 0.0, 1.0]])
    y = torch.tensor([0])
    ce = math.log(math.exp(2) + 1 + math.exp(1)) - 2
    assert math.isclose(float(per_sample_loss(logits, y, "ce")), ce, rel_tol=1e-6)
    assert float(per_sample_loss(logits, y, "margin")) == -1.0


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
@pytest.mark.parametrize(("loss", "moved"), [("ce", -0.1), ("margin", 0.1)])
def test_the_chosen_loss_is_the_one_followed(name: str, loss: str, moved: float) -> None:
    x = torch.full((2, 1), 0.5, dtype=torch.float64)
    params = {"loss": loss} if name == "fgsm" else {"loss": loss, "steps": 1, "random_start": False}
    x_adv = create_attack(name, **params)(_Crossing(), x, torch.zeros(2, dtype=torch.long), ThreatModel("linf", 0.1))
    assert torch.allclose(x_adv - x, torch.full_like(x, moved), atol=1e-12)


def test_pgd_ascent_reports_a_sample_fooled_by_its_last_step() -> None:
    """One step of 0.1 from 0.5 on the logits [x, 0.45]: the last iterate 0.4 is misclassified, and said to be."""
    from attacks.gradient import pgd_ascent, per_sample_loss

    class Edge(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return torch.cat([x, torch.full_like(x, 0.45)], dim=1)

    x, y = torch.full((1, 1), 0.5, dtype=torch.float64), torch.zeros(1, dtype=torch.long)
    out, fooled = pgd_ascent(Edge(), x, x, ThreatModel("linf", 0.1), steps=1, step_size=0.1,
                             loss_fn=lambda z, rows: per_sample_loss(z, y[rows], "ce"), y=y)
    assert bool(fooled.all()) and torch.allclose(out, torch.full_like(x, 0.4))


def test_pgd_runs_every_restart_from_its_own_random_start() -> None:
    """Never fooled: each of the 3 restarts starts at the next uniform draw of the seeded generator (the whole
    batch's), takes its one step, and the last restart's iterate is returned."""
    model = _Recorder()
    x = torch.full((4, 1), 0.5, dtype=torch.float64)
    threat = ThreatModel("linf", 0.1)
    x_adv = create_attack("pgd", steps=1, restarts=3, seed=5)(model, x, torch.ones(4, dtype=torch.long), threat)
    gen = torch.Generator().manual_seed(5)
    starts = [threat.random_start(x, gen) for _ in range(3)]
    assert len(model.seen) == 1 + 3 * 2
    assert all(torch.equal(model.seen[1 + 2 * r], starts[r]) for r in range(3))
    assert torch.equal(x_adv, model.seen[-1]) and torch.equal(x_adv, torch.full_like(x, 0.6))


def test_pgd_leaves_the_callers_robust_mask_alone() -> None:
    """The robust samples are all fooled by the one step (0.5 - 0.1 below the other logit 0.45); the mask passed in
    is the caller's: unchanged."""
    from attacks.gradient import projected_gradient_descent

    class Edge(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return torch.cat([x, torch.full_like(x, 0.45)], dim=1)

    x = torch.full((3, 1), 0.5, dtype=torch.float64)
    robust = torch.tensor([True, False, True])
    x_adv = projected_gradient_descent(Edge(), x, torch.zeros(3, dtype=torch.long), ThreatModel("linf", 0.1), steps=1,
                                       step_size=0.1, random_init=False, robust=robust)
    assert x_adv[:, 0].tolist() == pytest.approx([0.4, 0.5, 0.4])
    assert robust.tolist() == [True, False, True]
