"""Device-agnosticism audit, read from the source (AST, nothing imported): every tensor factory call in
``kwta_robust`` and ``attacks`` (``torch.zeros``, ``torch.arange``, ``torch.tensor``, ``torch.rand``, …, and
``torch.Generator()``) names its ``device=``, or is in :data:`ALLOWED` with the reason it may live on the host.

On CUDA a tensor made without ``device=`` lands on the CPU; mixed with the model's or the inputs' tensors
(``torch.where``, ``torch.cat``, arithmetic with a non-scalar CPU tensor, a CPU generator drawing for a CUDA
tensor) it raises. The
CPU test suite cannot see that: this test makes every host tensor a decision written down here. A new call is
fixed by taking the device from the tensor it meets (``device=x.device``, never a hard-coded ``"cuda"``), or, when
it is host bookkeeping (sample ids, seeds, a data set on the CPU) or a deliberate host draw moved once
(``.to(x)``), added below with its reason. Entries are keyed by file, enclosing function and call text, not by
line number: edits elsewhere in a file do not disturb them. The ``*_like`` factories and ``Tensor.new_*`` take
the device of their tensor and are not listed."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from kwta_robust.data import TensorData

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kwta_robust", "attacks")
#: ``torch.<name>(...)`` calls that make a tensor (or a generator) on torch's default device unless told.
FACTORIES = frozenset({
    "zeros", "ones", "empty", "full", "arange", "range", "tensor", "as_tensor", "asarray", "from_numpy", "rand",
    "randn", "randint", "randperm", "normal", "linspace", "logspace", "eye", "empty_strided", "scalar_tensor",
    "tril_indices", "triu_indices", "Generator",
})
#: Host tensors by ``(file, function, call)`` → why they may stay on the CPU (see the module docstring).
ALLOWED: dict[tuple[str, str, str], str] = {
    # attacks: never the model's device
    ("attacks/bpda_temperature.py", "StepTemperature.sampler", "torch.rand((), generator=generator)"):
        "a Python float per gradient evaluation, from a CPU generator",
    ("attacks/cascade.py", "run_verified", "torch.arange(n)"): "default sample ids: host bookkeeping for seeds",
    ("attacks/verdicts.py", "classify_batches", "torch.arange(n)"): "default sample ids: host bookkeeping for seeds",
    ("attacks/square.py", "_Draws.__init__", "torch.Generator()"): "the reference's CPU random stream",
    ("attacks/square.py", "_Draws.signs", "torch.rand(shape, generator=self.generator)"):
        "reference CPU stream; callers move the signs once with .to(x)",
    ("attacks/square.py", "_Draws.position", "torch.rand(1, generator=self.generator)"):
        "reference CPU stream, read as a Python int",
    ("attacks/square.py", "_Draws.coin", "torch.rand(1, generator=self.generator)"):
        "reference CPU stream, read as a Python bool",
    ("attacks/square.py", "_rings", "torch.arange(rows)"): "CPU pattern, moved once with .to(x) in patterns()",
    ("attacks/square.py", "_rings", "torch.arange(cols)"): "CPU pattern, moved once with .to(x) in patterns()",
    ("attacks/square.py", "_rings", "torch.zeros(rows, cols)"): "CPU pattern, moved once with .to(x) in patterns()",
    ("attacks/square.py", "_rings", "torch.tensor([k + 1.0])"): "CPU pattern, moved once with .to(x) in patterns()",
    ("attacks/square.py", "_Search.__init__", "torch.empty(0)"): "placeholder that start() replaces before any use",
    ("attacks/square.py", "_Search.__init__", "torch.empty(0, dtype=torch.bool)"):
        "placeholder that start() replaces before any use",
    # kwta_robust: data, records and seeds on the host
    ("kwta_robust/adversarial_store.py", "AdversarialStore.__init__", "torch.tensor(STORE_VERSION)"):
        "stored file content, on the CPU",
    ("kwta_robust/api.py", "_caller_rngs", "torch.empty(0)"): "probes torch's default device",
    ("kwta_robust/budget_check.py", "plan_reruns", "torch.Generator()"): "host sample order, read as a list",
    ("kwta_robust/budget_check.py", "plan_reruns", "torch.randperm(len(survivors), generator=gen)"):
        "host sample order, read as a list",
    ("kwta_robust/data.py", "TensorData.subset", "torch.as_tensor(list(idx), dtype=torch.long)"):
        "positions, moved to the data's device before indexing",
    ("kwta_robust/data.py", "load_dataset", "torch.arange(len(y), dtype=torch.long)"): "data sets load on the CPU",
    ("kwta_robust/data.py", "_to_tensors", "torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))"):
        "data sets load on the CPU",
    ("kwta_robust/data.py", "_to_tensors", "torch.from_numpy(y.astype(np.int64))"): "data sets load on the CPU",
    ("kwta_robust/data.py", "_load_cifar10", "torch.from_numpy(ds.data)"): "data sets load on the CPU",
    ("kwta_robust/data.py", "_load_cifar10", "torch.as_tensor(ds.targets, dtype=torch.int64)"):
        "data sets load on the CPU",
    ("kwta_robust/data.py", "_load_svhn", "torch.from_numpy(ds.data)"): "data sets load on the CPU",
    ("kwta_robust/data.py", "_load_svhn", "torch.as_tensor(ds.labels, dtype=torch.int64)"):
        "data sets load on the CPU",
    ("kwta_robust/datafile.py", "_as_tensor", "torch.from_numpy(np.ascontiguousarray(value))"):
        "data files load on the CPU",
    ("kwta_robust/datafile.py", "_wide_unsigned_labels", "torch.from_numpy(values.astype(np.int64))"):
        "data files load on the CPU",
    ("kwta_robust/datafile.py", "data_from_arrays", "torch.arange(len(y), dtype=torch.long)"):
        "data files load on the CPU",
    ("kwta_robust/evaluate.py", "_evaluate", "torch.zeros(0, dtype=torch.bool)"):
        "a layer-probe part's placeholder, never read",
    ("kwta_robust/layers.py", "_partition_threshold", "torch.from_numpy(kth_largest(flat.numpy(), k, dim))"):
        "the CPU-only path (_select_on_host)",
    ("kwta_robust/layers.py", "_KWTABase.__init__", "torch.zeros(num_units)"): "a buffer: moves with the module",
    ("kwta_robust/layers.py", "_KWTABase.__init__", "torch.zeros((), dtype=torch.long)"):
        "a buffer: moves with the module",
    ("kwta_robust/models/registry.py", "Normalize.__init__", "torch.zeros(channels)"):
        "a buffer: moves with the module",
    ("kwta_robust/models/registry.py", "Normalize.__init__", "torch.ones(channels)"):
        "a buffer: moves with the module",
    ("kwta_robust/models/registry.py", "Normalize.__init__", "torch.as_tensor(list(mean), dtype=torch.float32)"):
        "a buffer: moves with the module",
    ("kwta_robust/models/registry.py", "Normalize.__init__", "torch.as_tensor(list(std), dtype=torch.float32)"):
        "a buffer: moves with the module",
    ("kwta_robust/models/registry.py", "Normalize.__init__", "torch.empty(0)"): "a buffer: moves with the module",
    ("kwta_robust/samples.py", "select_samples", "torch.Generator()"): "host permutation of sample positions",
    ("kwta_robust/samples.py", "select_samples",
     "torch.randperm(n_total, generator=torch.Generator().manual_seed(cfg.permutation_seed))"):
        "host permutation of sample positions",
    ("kwta_robust/sparsity/allocation.py", "random_masks", "torch.randperm(numel, generator=generator)"):
        "drawn on the host, moved once to the weights' device",
    ("kwta_robust/sparsity/allocation.py", "random_masks", "torch.ones(numel, dtype=torch.bool)"):
        "drawn on the host, moved once to the weights' device",
    ("kwta_robust/sparsity/rigl.py", "RigL.install", "torch.Generator()"): "the host stream of random_masks",
    ("kwta_robust/training/loop.py", "train_model", "torch.Generator()"): "host batch order and augmentation draws",
    ("kwta_robust/training/loop.py", "train_model", "torch.randperm(n, generator=order_gen)"):
        "host batch order",
    ("kwta_robust/training/data_file.py", "split_data", "torch.Generator()"): "host split of a data file's samples",
    ("kwta_robust/training/data_file.py", "split_data",
     "torch.randperm(n, generator=torch.Generator().manual_seed(seed))"):
        "host split of a data file's samples (indices into the file, on the host)",
    ("kwta_robust/training/pruning.py", "score_batches", "torch.Generator()"): "host batch order",
    ("kwta_robust/training/pruning.py", "score_batches", "torch.randperm(len(train), generator=gen)"):
        "host batch order",
    ("kwta_robust/training/recipes.py", "_translate", "torch.randint(0, 2 * pad + 1, (n,), generator=gen)"):
        "host draws from the order generator, moved once with .to(x.device)",
    ("kwta_robust/training/recipes.py", "_translate", "torch.rand(n, generator=gen)"):
        "host draws from the order generator, moved once with .to(x.device)",
    ("kwta_robust/zoo/nupic_layers.py", "KWinnersBase.__init__", "torch.tensor(boost_strength, dtype=torch.float)"):
        "a buffer: moves with the module",
    ("kwta_robust/zoo/nupic_layers.py", "KWinners.__init__", "torch.zeros(self.n)"): "a buffer: moves with the module",
    ("kwta_robust/zoo/nupic_layers.py", "KWinners2d.__init__", "torch.zeros((1, channels, 1, 1))"):
        "a buffer: moves with the module",
    ("kwta_robust/zoo/nupic_layers.py", "SparseWeightsBase.__init__", "torch.Generator()"):
        "a construction-time mask: moves with the module",
    ("kwta_robust/zoo/nupic_layers.py", "SparseWeightsBase.__init__", "torch.rand(out_units, fan_in, generator=gen)"):
        "a construction-time mask: moves with the module",
    ("kwta_robust/zoo/nupic_layers.py", "SparseWeightsBase.__init__",
     "torch.ones(out_units, fan_in, dtype=torch.bool)"): "a construction-time mask: moves with the module",
}


def _qualified_names(tree: ast.AST) -> dict[ast.AST, str]:
    """Every node → the dotted name of the functions and classes around it (``<module>`` at top level)."""
    names: dict[ast.AST, str] = {}

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = child.name if scope == "<module>" else f"{scope}.{child.name}"
            names[child] = inner
            visit(child, inner)

    visit(tree, "<module>")
    return names


def deviceless_factories(source: str, file: str) -> list[tuple[str, str, str]]:
    """``(file, function, call text)`` of every ``torch.<factory>(...)`` call in ``source`` without ``device=``."""
    tree = ast.parse(source)
    scope = _qualified_names(tree)
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FACTORIES
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                and not any(k.arg == "device" for k in node.keywords)):
            found.append((file, scope[node], ast.unparse(node)))
    return found


def package_findings() -> set[tuple[str, str, str]]:
    return {key for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
            for key in deviceless_factories(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())}


def test_scanner_finds_a_deviceless_factory_and_only_that() -> None:
    source = ("import torch\n"
              "class A:\n"
              "    def f(self, x):\n"
              "        a = torch.zeros(3)\n"
              "        b = torch.zeros(3, device=x.device)\n"
              "        c = torch.zeros_like(x) + x.new_ones(3)\n"
              "        return torch.Generator(), torch.Generator(device=x.device), a, b, c\n")
    assert deviceless_factories(source, "m.py") == [("m.py", "A.f", "torch.zeros(3)"),
                                                     ("m.py", "A.f", "torch.Generator()")]


def test_every_deviceless_factory_is_allowed_with_a_reason() -> None:
    unexplained = sorted(package_findings() - set(ALLOWED))
    assert not unexplained, ("tensor factories without device= (take the device from the tensor they meet, or add "
                             f"them to ALLOWED with a reason): {unexplained}")


def test_no_stale_allowance() -> None:
    stale = sorted(set(ALLOWED) - package_findings())
    assert not stale, f"ALLOWED entries matching no call any more (remove them): {stale}"
    assert all(reason.strip() for reason in ALLOWED.values())


def test_subset_indexes_each_field_on_its_own_device() -> None:
    """``TensorData.subset`` with a tensor of positions: ``x`` on another device than ``y`` and ``indices`` (here
    ``meta``; on a GPU, ``TensorData(x.cuda(), y.cuda(), ..., torch.arange(n))`` as a caller of ``evaluate`` builds
    it) keeps each field where it was. Indexing the CPU ``indices`` with positions moved to ``x``'s device raised
    on CUDA ("indices should be either on cpu or on the same device") and read garbage on ``meta``."""
    data = TensorData(torch.zeros(4, 1, 2, 2, device="meta"), torch.tensor([0, 1, 2, 3]), "t", 10,
                      torch.tensor([10, 11, 12, 13]))
    part = data.subset(torch.tensor([2, 0]))
    assert part.x.device.type == "meta" and tuple(part.x.shape) == (2, 1, 2, 2)
    assert part.y.tolist() == [2, 0] and part.indices.tolist() == [12, 10]
