"""FAB / FAB-T, Carlini-Wagner L2 and DeepFool against independent computations: each paper's update written out
here, one sample at a time, in float64 on a tiny MLP (FAB: Croce & Hein, ICML 2020, as in AutoAttack's
``fab_base``, with torchattacks' sort-and-bisect box projections; CW: Carlini & Wagner, S&P 2017, with
``torch.optim.Adam`` and their binary search over ``c``; DeepFool: Moosavi-Dezfooli et al., CVPR 2016, with the
Jacobian from ``torch.autograd.functional``), the random restart point's closed form, the box projection on hand
tensors, and the published defaults (kills the surviving mutants of a mutation round on attacks/fab.py and
attacks/minimal.py)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torchattacks
from torch import Tensor, nn
from torch.autograd.functional import jacobian
from torchattacks.attacks.fab import projection_l2, projection_linf

from attacks import ThreatModel, create_attack
from attacks.base import seeded_generator
from attacks.fab import box_hyperplane_step, random_half_start
from attack_fixtures import CountingModel, robust_flags
from test_attack_progress import _with_interval

DIM, CLASSES = 6, 5


def tiny_mlp(seed: int = 0) -> nn.Module:
    """A fixed float64 ReLU MLP ``[N, 6] → [N, 5]`` (weights from a local generator)."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, CLASSES)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def mlp() -> tuple[nn.Module, Tensor, Tensor]:
    """The MLP, 16 points in [0.2, 0.8]^6 and labels: its predictions, two of them changed (misclassified)."""
    model = tiny_mlp()
    x = 0.2 + 0.6 * torch.rand(16, DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = model(x).argmax(dim=1)
    y[[3, 11]] = (y[[3, 11]] + 1) % CLASSES
    return model, x, y


def _logits_jacobian(model: nn.Module, point: Tensor) -> tuple[Tensor, Tensor]:
    """``z`` ``[C]`` and ``dz/dx`` ``[C, D]`` at one point ``[D]``."""
    return model(point[None])[0], jacobian(lambda v: model(v[None])[0], point)


def _predicts(model: nn.Module, point: Tensor) -> int:
    return int(model(point[None])[0].argmax())


# --- FAB ----------------------------------------------------------------------------------------------------------


def fab_reference(model: nn.Module, x0: Tensor, y: int, classes: list[int], start: Tensor, threat: ThreatModel,
                  steps: int, alpha_max: float, eta: float, beta: float) -> tuple[Tensor, bool]:
    """One FAB run on one sample, step by step as in AutoAttack's ``fab_base``; stops at its first misclassified
    iterate within eps (the early stop of :mod:`attacks.fab`), else returns ``x0``."""
    project = projection_linf if threat.norm == "linf" else projection_l2
    x1 = start.clone()
    for _ in range(steps):
        z, jac = _logits_jacobian(model, x1)
        df = torch.stack([z[j] - z[y] for j in classes])
        dg = torch.stack([jac[j] - jac[y] for j in classes])
        dual = dg.abs().sum(dim=1) if threat.norm == "linf" else dg.norm(dim=1)
        j = int((df.abs() / (dual + 1e-12)).argmin())
        w, b = dg[j], dg[j] @ x1 - df[j]
        d1, d2 = project(torch.stack([x1, x0]), torch.stack([w, w]), torch.stack([b, b]))
        n1, n2 = (max(float(threat.distance(d[None], torch.zeros_like(d[None]))), 1e-8) for d in (d1, d2))
        alpha = min(n1 / (n1 + n2), alpha_max)
        x1 = ((x1 + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha).clamp(0.0, 1.0)
        if _predicts(model, x1) != y:
            if float(threat.distance(x1[None], x0[None])) <= threat.eps:
                return x1, True
            x1 = x0 + beta * (x1 - x0)
    return x0.clone(), False


def fab_cascade_reference(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, targets: int | None,
                          restarts: int = 1, seed: int = 0, **params) -> Tensor:
    """FAB (``targets`` None: every other class) or FAB-T (the 2nd, 3rd, ... highest clean logits): per target,
    ``restarts`` runs (restart 0 from the clean input, later ones from the random half-eps start drawn for the
    samples still robust, in order), each on the samples still robust only."""
    out, robust = x.clone(), model(x).argmax(dim=1) == y
    ranked = model(x).argsort(dim=1, descending=True)
    n_sets = 1 if targets is None else min(targets, CLASSES - 1)
    gen = seeded_generator(seed, x.device)
    for k in range(n_sets):
        for restart in range(restarts):
            rows = robust.nonzero().squeeze(1).tolist()
            if not rows:
                return out
            starts = x[rows] if restart == 0 else random_half_start(x[rows], threat, gen)
            for i, start in zip(rows, starts):
                label = int(y[i])
                classes = [c for c in range(CLASSES) if c != label] if targets is None else [int(ranked[i, k + 1])]
                adv, fooled = fab_reference(model, x[i], label, classes, start, threat, **params)
                if fooled:
                    out[i], robust[i] = adv, False
    return out


#: (norm, eps, FAB-T's target count or None for FAB, restarts, steps, params); with one step the random restarts
#: break samples that restart 0 leaves robust
FAB_CASES = [("linf", 0.08, None, 1, 12, {}), ("l2", 0.2, None, 1, 12, {}), ("linf", 0.05, 3, 1, 12, {}),
             ("l2", 0.12, 9, 1, 12, {"alpha_max": 0.3, "eta": 1.2, "beta": 0.6}), ("linf", 0.1, None, 3, 1, {}),
             ("l2", 0.3, 2, 3, 1, {}), ("l2", 0.1, 2, 2, 12, {"beta": 1.0, "alpha_max": 1.0})]


@pytest.mark.parametrize(("norm", "eps", "targets", "restarts", "steps", "params"), FAB_CASES)
def test_fab_is_the_reference_update_with_an_early_stop(mlp, norm, eps, targets, restarts, steps, params) -> None:
    model, x, y = mlp
    threat = ThreatModel(norm, eps)
    settings = {"alpha_max": 0.1, "eta": 1.05, "beta": 0.9, **params}
    expected = fab_cascade_reference(model, x, y, threat, targets, restarts, steps=steps, **settings)
    extra = {} if targets is None else {"n_target_classes": targets}
    ours = create_attack("fab" if targets is None else "fab-t", steps=steps, restarts=restarts, **settings, **extra)
    x_adv = ours(model, x, y, threat)
    broken = ~robust_flags(model, x_adv, y) & robust_flags(model, x, y)
    assert 0 < int(broken.sum()) < int(robust_flags(model, x, y).sum())  # the comparison is not trivial
    # rounding: the projections differ in the last bits (Newton here, sort and bisect there); over 12 steps without
    # a pull-back (beta 1) about 1e-9
    assert torch.allclose(x_adv, expected, rtol=0, atol=1e-7)


def test_fab_at_eps_zero_or_without_robust_samples_calls_the_model_once(mlp) -> None:
    model, x, y = mlp
    for threat, rows in ((ThreatModel("linf", 0.0), slice(None)), (ThreatModel("l2", 0.5), [3, 11])):
        counting = CountingModel(model)
        assert torch.equal(create_attack("fab", steps=5)(counting, x[rows], y[rows], threat), x[rows])
        assert counting.batches == [len(x[rows])]  # the entry check only


def test_fab_never_calls_the_model_on_an_empty_batch(mlp) -> None:
    model, x, y = mlp
    robust = robust_flags(model, x, y)
    for name in ("fab", "fab-t"):
        counting = CountingModel(model)
        x_adv = create_attack(name, steps=40, restarts=2)(counting, x[robust], y[robust], ThreatModel("linf", 1.0))
        assert not bool(robust_flags(model, x_adv, y[robust]).any())  # everything breaks at eps 1 ...
        assert 0 not in counting.batches  # ... and then nothing more is computed


class FiniteInputs(nn.Module):
    """Wraps a model and records whether every input it was given is finite."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.finite = model, True

    def forward(self, x: Tensor) -> Tensor:
        self.finite = self.finite and bool(torch.isfinite(x).all())
        return self.model(x)


def _two_class_linear(weight: list[list[float]], bias: list[float]) -> nn.Module:
    model = nn.Linear(len(weight[0]), 2).double().requires_grad_(False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weight, dtype=torch.float64))
        model.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return model


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_counts_an_iterate_at_exactly_eps_as_within(norm: str) -> None:
    """1-d, f_1 - f_0 = x - 1/4 at x0 = 0: the first step projects both x1 = x0 and x0 onto x = 1/4, alpha = 1/2,
    so x1 = eta / 4 = 3/8 exactly (eta 3/2), adversarial, at distance exactly eps = 3/8: returned as it is."""
    model = _two_class_linear([[0.0], [1.0]], [0.0, -0.25])
    x, y = torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.long)
    x_adv = create_attack("fab", steps=3, eta=1.5, alpha_max=0.5)(model, x, y, ThreatModel(norm, 0.375))
    assert x_adv.item() == 0.375


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_at_a_corner_with_no_room_towards_the_boundary_stays_finite(norm: str) -> None:
    """At x0 = 0 the boundary x_a + x_b = -1/2 lies outside the box: both projection steps are 0, the sizes are
    floored at 1e-8 (alpha = 1/2, capped), the iterate stays at x0, and the model never sees a NaN."""
    model = FiniteInputs(_two_class_linear([[1.0, 1.0], [0.0, 0.0]], [0.5, 0.0]))
    x, y = torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, dtype=torch.long)
    assert torch.equal(create_attack("fab", steps=4)(model, x, y, ThreatModel(norm, 1.0)), x)
    assert model.finite


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_half_start_lies_at_half_eps_in_a_random_direction(norm: str) -> None:
    threat = ThreatModel(norm, 0.3)
    x = torch.full((200, 3, 4), 0.5, dtype=torch.float64)
    start = random_half_start(x, threat, seeded_generator(0, "cpu"))
    assert torch.allclose(threat.distance(start, x), torch.full((200,), 0.15, dtype=torch.float64))
    delta = (start - x).flatten()
    assert float((delta > 0).double().mean()) == pytest.approx(0.5, abs=0.05)  # both signs, evenly
    if norm == "linf":  # t uniform in [-1, 1] scaled by its max: |delta| / 0.15: 1 once, else uniform in [0, 1]
        assert float(delta.abs().mean() / 0.15) == pytest.approx(11 / 24 + 1 / 12, abs=0.03)
    corner = random_half_start(torch.zeros(50, 12), ThreatModel(norm, 2.0), seeded_generator(1, "cpu"))
    assert float(corner.min()) == 0.0 and float(corner.max()) <= 1.0  # clipped to the bounds


def test_box_projection_by_hand() -> None:
    """Closed forms on 2-d points: unconstrained steps, a saturated coordinate, an unreachable hyperplane."""
    points = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.9, 0.5], [0.9, 0.5], [0.5, 0.5]], dtype=torch.float64)
    w = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 2.0], [1.0, 2.0], [1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([1.2, 0.4, 2.6, 3.4, 0.3], dtype=torch.float64)
    linf = box_hyperplane_step(points, w, b, "linf", (0.0, 1.0))
    l2 = box_hyperplane_step(points, w, b, "l2", (0.0, 1.0))
    # row 3 (w . p = 1.9, raise by 0.7): the first coordinate saturates at 0.1 (room to 1), the second moves 0.3 in
    # both norms (Linf: 0.1 + 2 * 0.3; L2: d = lambda w until lambda 0.1, then 0.1 + 2 * 2 lambda = 0.7)
    expected = [[0.1, 0.1], [-0.3, -0.3], [0.1, 0.3], [0.1, 0.5], [-0.2, 0.0]]
    assert torch.allclose(linf, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(l2, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    # the same hyperplane in the other orientation (w, b negated) gives the same step
    assert torch.allclose(box_hyperplane_step(points, -w, -b, "l2", (0.0, 1.0)), l2, atol=1e-12)


def test_fab_defaults_are_the_references() -> None:
    ref = inspect.signature(torchattacks.FAB.__init__).parameters
    for name in ("fab", "fab-t"):
        attack = create_attack(name)
        names = ("alpha_max", "eta", "beta")
        assert tuple(getattr(attack, k) for k in names) == tuple(ref[k].default for k in names) == (0.1, 1.05, 0.9)


# --- Carlini-Wagner L2 --------------------------------------------------------------------------------------------


def cw_reference(model: nn.Module, x0: Tensor, y: int, eps: float, steps: int, search_steps: int, const: float,
                 kappa: float, lr: float) -> Tensor:
    """CW-L2 on one sample in [0, 1]: ``||x' - x||^2 + c max(z_y - max_j z_j, -kappa)`` over ``x' = (tanh(w) + 1) /
    2`` with torch's Adam, ``c`` x10 until the first success then bisected (their reference code); the smallest
    adversarial is kept until one lies inside the eps ball (then the sample stops); returns the projected result."""
    w0 = torch.atanh((2 * x0 - 1) * (1 - 1e-6))
    lower, upper, best, best_dist, last = 0.0, math.inf, None, math.inf, x0
    for _ in range(search_steps):
        w = w0.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=lr)
        success = False
        for _ in range(steps):
            x_new = (torch.tanh(w) + 1) / 2
            z = model(x_new[None])[0]
            dist = ((x_new - x0) ** 2).sum()
            other = max(z[j] for j in range(len(z)) if j != y)
            loss = dist + const * torch.clamp(z[y] - other, min=-kappa)
            if int(z.argmax()) != y:
                success = True
                if float(dist.detach()) < best_dist:
                    best, best_dist = x_new.detach().clone(), float(dist.detach())
                if best_dist <= eps**2:
                    return ThreatModel("l2", eps).project(best[None], x0[None])[0]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        last = ((torch.tanh(w) + 1) / 2).detach()
        if success:
            upper = min(upper, const)
        else:
            lower = max(lower, const)
        const = const * 10 if math.isinf(upper) else (lower + upper) / 2
    return ThreatModel("l2", eps).project((last if best is None else best)[None], x0[None])[0]


CW_CASES = [(0.25, {"steps": 25, "search_steps": 4, "initial_const": 0.05, "lr": 0.05}),
            (0.15, {"steps": 25, "search_steps": 3, "initial_const": 0.5, "lr": 0.05, "kappa": 0.5})]


@pytest.mark.parametrize(("eps", "params"), CW_CASES)
def test_cw_is_the_papers_optimisation_with_its_binary_search(mlp, eps: float, params: dict) -> None:
    model, x, y = mlp
    x_adv = create_attack("cw", **params)(model, x, y, ThreatModel("l2", eps))
    expected = torch.stack([cw_reference(model, x[i], int(y[i]), eps, params["steps"], params["search_steps"],
                                         params["initial_const"], params.get("kappa", 0.0), params["lr"])
                            for i in range(len(x))])
    broken = ~robust_flags(model, x_adv, y) & robust_flags(model, x, y)
    assert 0 < int(broken.sum()) < int(robust_flags(model, x, y).sum())
    assert torch.allclose(x_adv, expected, rtol=0, atol=1e-8)


def test_cw_inputs_at_the_tolerated_edge_of_the_bounds_stay_finite(mlp) -> None:
    """The entry check lets inputs lie up to 1e-6 outside the bounds; the tanh change of variables must not turn
    them into NaN (atanh of a value above 1)."""
    model, x, y = mlp
    edge = x[:4].clone()
    edge[:, 0], edge[:, 1] = 1 + 9e-7, -9e-7
    x_adv = create_attack("cw", steps=5, search_steps=2)(model, edge, y[:4], ThreatModel("l2", 0.3))
    assert bool(torch.isfinite(x_adv).all())


@pytest.mark.parametrize("every", [3, 5])
def test_cw_between_progress_reads_keeps_the_first_adversarial_inside_the_ball(mlp, monkeypatch, every) -> None:
    """On an accelerator a sample leaves the batch only at the next read: it keeps its first in-ball best meanwhile,
    so the result is the CPU's (a read every step), bit for bit; and no model call ever gets an empty batch."""
    model, x, y = mlp
    params, threat = {"steps": 25, "search_steps": 2, "initial_const": 0.5, "lr": 0.05}, ThreatModel("l2", 0.5)
    each_step = create_attack("cw", **params)(model, x, y, threat)
    _with_interval(monkeypatch, every)
    counting = CountingModel(model)
    assert torch.equal(create_attack("cw", **params)(counting, x, y, threat), each_step)
    assert 0 not in counting.batches
    counting = CountingModel(model)
    robust = robust_flags(model, x, y)
    create_attack("cw", **params)(counting, x[robust], y[robust], ThreatModel("l2", 10.0))
    assert 0 not in counting.batches and sum(counting.batches) < params["steps"] * int(robust.sum())


def test_cw_without_an_adversarial_returns_its_last_iterate() -> None:
    """Far from the boundary nothing is adversarial: the last iterate comes back. Adam's first step is ``lr``
    against the gradient's sign (``m_hat / sqrt(v_hat) = g / |g|``), and the gradient of ``c (z_y - z_o)`` in tanh
    space has the sign of ``w_y - w_o``: one step from ``w0 = atanh(2x - 1)`` in closed form."""
    model = _two_class_linear([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]], [5.0, 0.0])
    x = torch.tensor([[0.3, 0.5, 0.7], [0.6, 0.2, 0.45]], dtype=torch.float64)
    y = torch.zeros(2, dtype=torch.long)
    x_adv = create_attack("cw", steps=1, search_steps=1, lr=0.01)(model, x, y, ThreatModel("l2", 10.0))
    w0 = torch.atanh((2 * x - 1) * (1 - 1e-6))
    expected = (torch.tanh(w0 - 0.01 * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)) + 1) / 2
    assert torch.allclose(x_adv, expected, rtol=0, atol=1e-9)


# --- DeepFool -----------------------------------------------------------------------------------------------------


def deepfool_reference(model: nn.Module, x0: Tensor, y: int, norm: str, steps: int, overshoot: float,
                       candidates: int) -> Tensor:
    """Algorithm 2 of the paper on one sample (``q = 1`` for Linf, 2 for L2) among the ``candidates`` classes of
    highest clean logit, ``r`` accumulated and applied with the overshoot; the step is ``|f'| / ||w'||_q^q
    |w'|^(q - 1) sign(w')`` lengthened by 1e-4 in input units (the authors' ``(pert + 1e-4) * w / ||w||``)."""
    clean = model(x0[None])[0]
    if int(clean.argmax()) != y:
        return x0.clone()
    others = [int(c) for c in clean.argsort(descending=True) if int(c) != y][:candidates - 1]
    q = 1 if norm == "linf" else 2
    point, r_total = x0.clone(), torch.zeros_like(x0)
    for _ in range(steps):
        z, jac = _logits_jacobian(model, point)
        if int(z.argmax()) != y:
            break
        ratios = [abs(float(z[k] - z[y])) / float((jac[k] - jac[y]).norm(p=q)) for k in others]
        k = others[min(range(len(others)), key=ratios.__getitem__)]
        w = jac[k] - jac[y]
        length = abs(float(z[k] - z[y])) / float(w.norm(p=q)) + 1e-4  # the distance to the boundary, plus 1e-4
        r_total = r_total + length / float(w.norm(p=q)) ** (q - 1) * w.abs() ** (q - 1) * w.sign()
        point = (x0 + (1 + overshoot) * r_total).clamp(0.0, 1.0)
    return point


@pytest.mark.parametrize(("norm", "eps", "params", "faces"), [
    ("linf", 0.06, {}, False), ("l2", 0.15, {"candidates": 3}, False),
    ("linf", 0.05, {"candidates": 2, "steps": 2}, False), ("l2", 0.3, {}, True), ("linf", 0.12, {}, True)])
def test_deepfool_is_the_papers_algorithm(mlp, norm: str, eps: float, params: dict, faces: bool) -> None:
    """``faces``: three coordinates of every point on a box face (labels: the model's), so steps get clipped."""
    model, x, y = mlp
    if faces:
        x = x.clone()
        x[:, :3] = x[:, :3].round()
        y = model(x).argmax(dim=1)
    threat = ThreatModel(norm, eps)
    settings = {"steps": 50, "overshoot": 0.02, "candidates": 10, **params}
    x_adv = create_attack("deepfool", **params)(model, x, y, threat)
    expected = torch.stack([deepfool_reference(model, x[i], int(y[i]), norm, settings["steps"], settings["overshoot"],
                                               min(settings["candidates"], CLASSES)) for i in range(len(x))])
    broken = ~robust_flags(model, x_adv, y) & robust_flags(model, x, y)
    assert 0 < int(broken.sum()) < int(robust_flags(model, x, y).sum())
    assert torch.allclose(x_adv, threat.project(expected, x), rtol=0, atol=1e-9)


def test_deepfool_crosses_an_affine_boundary_in_one_step_without_overshoot() -> None:
    """On an affine classifier the linearisation is exact: one step lands past the boundary (the paper's
    convergence in one step), even with no overshoot; the distance is the closed form ``|f| / ||w||_q``."""
    model = nn.Linear(DIM, 2).double().requires_grad_(False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0, 3.0, -1.0], [0.0] * DIM]))
        model.bias.copy_(torch.tensor([-0.6, 0.0]))
    x = 0.4 + 0.2 * torch.rand(40, DIM, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = model(x).argmax(dim=1)
    y[:2] = 1 - y[:2]  # misclassified: returned as they are, never linearised
    margin = (model(x)[2:, 0] - model(x)[2:, 1]).abs()
    for norm, q in (("linf", 1), ("l2", 2)):
        counting = CountingModel(model)
        x_adv = create_attack("deepfool", overshoot=0.0)(counting, x, y, ThreatModel(norm, 10.0))
        assert not bool(robust_flags(model, x_adv, y).any()) and torch.equal(x_adv[:2], x[:2])
        excess = ThreatModel(norm, 1.0).distance(x_adv[2:], x[2:]) - margin / model.weight[0].norm(p=q)
        assert bool((excess >= 0).all() and (excess < 1e-3).all())  # minimal: just past the boundary
        assert counting.batches == [40, 38, 38]  # entry check, the step, the check that stops every sample


def test_deepfool_steps_to_the_boundary_nearest_in_the_threat_models_norm() -> None:
    """Three affine classes at x0 = (1/2, 1/2): the boundary to class 1 (w' = (1, 1), |f'| = 0.2) is at Linf
    distance 0.2 / ||w'||_1 = 0.1 but L2 distance 0.2 / sqrt(2) = 0.141; the one to class 2 (w' = (1.5, 0), |f'| =
    0.18) at 0.12 in both. Linf steps to class 1, L2 to class 2, each by (1 + overshoot) (|f'| / ||w'||_q + 1e-4)."""
    model = nn.Linear(2, 3).double().requires_grad_(False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.5, 0.0]]))
        model.bias.copy_(torch.tensor([0.0, -1.2, -0.93], dtype=torch.float64))
    x, y = torch.full((1, 2), 0.5, dtype=torch.float64), torch.zeros(1, dtype=torch.long)
    for norm, target, size in (("linf", 1, 0.2 / 2 + 1e-4), ("l2", 2, 0.18 / 1.5 + 1e-4)):
        x_adv = create_attack("deepfool")(model, x, y, ThreatModel(norm, 1.0))
        assert int(model(x_adv).argmax()) == target
        assert float(ThreatModel(norm, 1.0).distance(x_adv, x)) == pytest.approx(1.02 * size, rel=1e-9)


def test_deepfool_defaults_are_the_references() -> None:
    ref = inspect.signature(torchattacks.DeepFool.__init__).parameters
    attack = create_attack("deepfool")
    assert (attack.steps, attack.overshoot) == (ref["steps"].default, ref["overshoot"].default) == (50, 0.02)
    assert attack.candidates == 10  # the reference code's num_classes: the 10 classes of highest clean logit
