"""The GPU path on the CPU: evaluations run on the simulated CUDA device of :mod:`simulated_device`, where mixing a
CPU tensor into device computations raises as on CUDA, so device-mixing bugs fail here and not on a user's GPU.

(a) The simulator itself: it raises (and records the finding) where CUDA raises and lets through what CUDA lets
through, and puts every patched global back; a torch upgrade that breaks it fails here rather than letting (b)
and (c) pass without checking anything (they also assert that operations ran on the device).
(b) :func:`kwta_robust.evaluate.evaluate` of a small trained kWTA CNN (digits, 8 samples) with ``device: cuda``,
the model moved with ``model.to("cuda")`` and the data's ``x``/``y`` on the device (its ``indices``, the samples'
names, on the CPU), through PGD, APGD-CE, Square (L∞ and L2), BPDA with the smooth surrogate under a temperature
schedule and with the identity surrogate, gradient estimation, FGSM, HopSkipJump (foolbox), a Gaussian noise
probe, the sanity attack and the budget check: no finding, and the same per-sample flags, sanity flags, noise
accuracies and diagnostics as the same evaluation on the CPU (the simulation computes with CPU kernels; the CPU run
uses the device's memory layout, ``preserve``, so both run the same operations).
(c) Two gates written the way users write them, an inline top-k gate in a residual block
(``wild_kwta_models.inline_residual``) and a max-pool winner-take-all (``gates_styles.net("pool_max")``), through
PGD and BPDA (smooth, identity) on the device: BPDA acts on the gate, no finding, the CPU's flags.

Not run here, for time only: the learned BPDA surrogate, Boundary, CW, FAB, APGD-T, EOT, DeepFool, the other wild
models (evaluated with the CPU's flags) and training (PGD adversarial, boosted kWTA) ran on the simulated device
with no finding when this file was written, but take minutes. Not reachable at all (see :mod:`simulated_device`):
work in other processes (shards, sweeps, plugin isolation), code branching on ``device.type == "cuda"``, and the
Python API with ``device: cuda`` (its device check compares the config's ``cuda`` with the simulated ``meta``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn

import gates_styles
import wild_kwta_models
from attack_fixtures import trained_cnn
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.evaluate import evaluate
from kwta_robust.results import EvalRecord
from simulated_device import DEVICE, DeviceTensor, simulated_cuda

N = 8  # samples
SCHEDULE = [0.05, {"log_uniform": [0.02, 0.1]}]


# ---------------------------------------------------------------------------------------------------------------
# (a) the simulator
# ---------------------------------------------------------------------------------------------------------------
def on_device(t: torch.Tensor) -> torch.Tensor:
    return t.to("cuda")


RAISES: dict[str, Callable[[], Any]] = {
    "cpu vector into a device op": lambda: on_device(torch.ones(2, 3)) + torch.ones(3),
    "cpu index tensor for gather": lambda: on_device(torch.ones(2, 3)).gather(1, torch.zeros(2, 1, dtype=torch.long)),
    "cpu scalar into stack": lambda: torch.stack([on_device(torch.ones(())), torch.tensor(1.0)]),
    "cpu generator drawing for the device": lambda: torch.rand(3, generator=torch.Generator(), device="cuda"),
    "cpu generator drawing into a device tensor": lambda: on_device(torch.zeros(3)).uniform_(
        generator=torch.Generator()),
    "device generator drawing for the cpu": lambda: torch.rand(3, generator=torch.Generator(device="cuda")),
    "cpu tensor indexed by a device index": lambda: torch.arange(5)[on_device(torch.tensor([0, 2]))],
    "cpu tensor written at a device index": lambda: torch.arange(5).index_put_(
        (on_device(torch.tensor([1])),), torch.tensor(0)),
    "numpy of a device tensor": lambda: on_device(torch.ones(2)).numpy(),
    "numpy array of a device tensor": lambda: np.asarray(on_device(torch.ones(2))),
}


@pytest.mark.parametrize("name", list(RAISES))
def test_the_simulator_raises_and_records_where_cuda_raises(name: str) -> None:
    with simulated_cuda() as sim:
        with pytest.raises(RuntimeError, match="simulated CUDA"):
            RAISES[name]()
    assert len(sim.findings) == 1 and "File" in sim.findings[0].stack


def test_the_simulator_allows_what_cuda_allows_with_the_cpus_values() -> None:
    x = torch.rand(4, 3, generator=torch.Generator().manual_seed(0))
    with simulated_cuda() as sim:
        d = x.to("cuda")
        scaled = d * torch.tensor(2.0) + torch.tensor(1.0)  # 0-dim CPU tensors are scalars
        picked = d[torch.tensor([3, 0])]  # a device tensor indexed with CPU indices
        written = d.clone()
        written[torch.tensor([1])] = torch.tensor(7.0)
        drawn = torch.rand(3, generator=torch.Generator(device=d.device).manual_seed(1), device="cuda")
        host = torch.rand(3, generator=torch.Generator().manual_seed(1))
        kinds = [type(t) for t in (d, d.cuda(), scaled, picked, written, drawn, torch.zeros(2, device="cuda"),
                                   torch.tensor([1.0], device="cuda"), d.new_zeros(2), torch.zeros_like(d))]
        assert kinds == [DeviceTensor] * len(kinds) and d.device == DEVICE
        values = [t.cpu() for t in (scaled, picked, written, drawn)]
        assert type(values[0]) is torch.Tensor and values[0].device.type == "cpu"
        assert d.tolist() == x.tolist() and d.sum().item() == pytest.approx(float(x.sum()))
        assert torch.cuda.is_available() and isinstance(torch.Generator(), torch.Generator)
    assert sim.findings == [] and sim.device_ops > 10
    torch.testing.assert_close(values[0], x * 2 + 1, rtol=0, atol=0)
    torch.testing.assert_close(values[1], x[[3, 0]], rtol=0, atol=0)
    assert values[2][1].tolist() == [7.0] * 3 and values[2][0].tolist() == x[0].tolist()
    torch.testing.assert_close(values[3], host, rtol=0, atol=0)  # a device generator draws the CPU's stream


def test_a_model_moved_to_cuda_trains_there_with_device_gradients() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.rand(5, 3)
    with simulated_cuda() as sim:
        model.to("cuda")
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        loss = nn.functional.cross_entropy(model(x.cuda()), torch.zeros(5, dtype=torch.long).cuda())
        loss.backward()
        optimizer.step()
        assert all(isinstance(p, nn.Parameter) and isinstance(p, DeviceTensor) for p in model.parameters())
        assert {p.device for p in model.parameters()} == {DEVICE}
        assert {type(p.grad) for p in model.parameters()} == {DeviceTensor}
        with pytest.raises(RuntimeError, match="simulated CUDA"):
            model(x)  # the CPU input meets the device weights
    assert len(sim.findings) == 1


def test_every_patched_global_is_restored_even_after_an_error() -> None:
    before = (torch.Generator, torch.cuda.is_available, torch.cuda.synchronize, torch.cuda.get_rng_state,
              torch.optim.Optimizer._accelerator_graph_capture_health_check)
    with pytest.raises(ValueError, match="inside"):
        with simulated_cuda():
            leaked = torch.ones(2).to("cuda")
            raise ValueError("inside")
    after = (torch.Generator, torch.cuda.is_available, torch.cuda.synchronize, torch.cuda.get_rng_state,
             torch.optim.Optimizer._accelerator_graph_capture_health_check)
    assert after == before
    assert type(torch.Generator()) is torch._C.Generator
    with pytest.raises(RuntimeError, match="outside simulated_cuda"):
        leaked + 1  # a device tensor kept past the block
    assert torch.rand(2).device.type == "cpu" and np.asarray(torch.ones(2)).tolist() == [1.0, 1.0]


# ---------------------------------------------------------------------------------------------------------------
# (b) an evaluation through the main paths
# ---------------------------------------------------------------------------------------------------------------
def suite(device: str) -> EvalConfig:
    return EvalConfig.from_dict({
        "dataset": "digits", "n_examples": N, "batch_size": 4, "device": device, "seed": 0,
        "threats": [{"norm": "linf", "epsilons": [0.05]}, {"norm": "l2", "epsilons": [0.5]}],
        "attacks": [
            {"attack": "pgd", "params": {"steps": 2}},
            {"attack": "apgd-ce", "params": {"steps": 2}},
            {"attack": "square", "params": {"n_queries": 3}},
            {"attack": "bpda", "label": "bpda-smooth", "params": {
                "surrogate": "smooth", "inner": "apgd-ce", "stage_steps": [2, 2], "temperature_schedule": SCHEDULE}},
            {"attack": "bpda", "label": "bpda-identity", "params": {
                "surrogate": "identity", "inner": "pgd", "inner_params": {"steps": 2}}},
            {"attack": "gradient-estimation", "norms": ["linf"], "params": {"steps": 1}},
            {"attack": "fgsm", "norms": ["linf"]},
            {"attack": "hopskipjump", "norms": ["l2"], "params": {"steps": 1, "initial_gradient_eval_steps": 4,
                                                                 "init_directions": 10, "init_steps": 5}},
        ],
        "noise": [{"kind": "gaussian", "draws": 1}],
        "diagnostics": {"enabled": True, "gradient_batch": 4,
                        "sanity": {"norm": "linf", "eps": 1.0, "attack": "pgd", "params": {"steps": 2}},
                        "budget_check": {"enabled": True, "samples": 2}},
    })


def summary(record: EvalRecord) -> dict[str, Any]:
    """What must not depend on the device: per-sample flags, BPDA's layers, sanity, noise and diagnostics."""
    return {
        "clean": record.clean_flags,
        "results": [(r.label, r.norm, r.eps, r.robust.correct, r.flags, r.bpda_layers) for r in record.results],
        "sanity": [(r.label, r.flags) for r in record.sanity],
        "noise": [(n.kind, n.result["accuracy"]) for n in record.noise],
        "diagnostics": sorted(f.code for f in record.diagnostics),
    }


def test_an_evaluation_on_the_device_mixes_no_cpu_tensor_and_matches_the_cpu() -> None:
    model, x, y = trained_cnn("kwta")
    x, y = x[:N], y[:N]
    cpu = evaluate(model, TensorData(x, y, "digits", 10, torch.arange(N)), suite("cpu"), {}, progress=False,
                   layout="preserve")
    with simulated_cuda() as sim:
        model.to("cuda")
        data = TensorData(x.to("cuda"), y.to("cuda"), "digits", 10, torch.arange(N))  # names stay on the CPU
        record = evaluate(model, data, suite("cuda"), {}, progress=False)
    assert [str(f) for f in sim.findings] == []
    assert sim.device_ops > 1000
    expected = summary(cpu)
    assert summary(record) == expected
    assert all(r.n_attacked for r in cpu.results)  # every attack had samples to attack
    assert expected["noise"] and expected["sanity"] and "budget-checked" in expected["diagnostics"]


# ---------------------------------------------------------------------------------------------------------------
# (c) gates written the way users write them, through BPDA
# ---------------------------------------------------------------------------------------------------------------
WILD: dict[str, Callable[[], nn.Module]] = {
    "inline top-k in a residual block": wild_kwta_models.inline_residual,
    "max-pool winner-take-all": lambda: gates_styles.net("pool_max"),
}
WILD_CONFIG = {
    "dataset": "toy", "batch_size": N, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}], "noise": [],
    "attacks": [{"attack": "pgd", "params": {"steps": 2}},
                {"attack": "bpda", "label": "bpda-smooth", "params": {"surrogate": "smooth",
                                                                      "inner_params": {"steps": 2}}},
                {"attack": "bpda", "label": "bpda-identity", "params": {"surrogate": "identity",
                                                                        "inner_params": {"steps": 2}}}],
    "diagnostics": {"enabled": True, "gradient_batch": N, "budget_check": {"enabled": False}},
}


@pytest.mark.parametrize("name", list(WILD))
def test_bpda_on_a_users_gate_runs_on_the_device_as_on_the_cpu(name: str) -> None:
    x = wild_kwta_models.X[:N]
    model = WILD[name]()
    with torch.no_grad():
        y = model(x).argmax(1)
    cpu = evaluate(model, TensorData(x, y, "toy", 3, torch.arange(N)), EvalConfig.from_dict(WILD_CONFIG), {},
                   progress=False, layout="preserve")
    with simulated_cuda() as sim:
        model.to("cuda")
        record = evaluate(model, TensorData(x, y, "toy", 3, torch.arange(N)),
                          EvalConfig.from_dict({**WILD_CONFIG, "device": "cuda"}), {}, progress=False)
    assert [str(f) for f in sim.findings] == []
    assert sim.device_ops > 100
    assert summary(record) == summary(cpu)
    assert all(r.bpda_layers for r in cpu.results if r.kind == "bpda")  # BPDA found the gate and relaxed it
